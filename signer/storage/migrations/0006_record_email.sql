-- The e-mail address the certificate carries (subjectAltName rfc822Name, natural persons), so
-- auditors can search by e-mail (issue 5) through an index. Records made before this migration
-- keep NULL: their address is only inside the certificate.
ALTER TABLE signing_records ADD COLUMN email text;
CREATE INDEX signing_records_email ON signing_records (lower(email), created_at DESC)
    WHERE email IS NOT NULL;
