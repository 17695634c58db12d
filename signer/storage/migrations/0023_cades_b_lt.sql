-- CAdES baseline B-LT (EN 319 122-1 §6.3; issue 15 item 4): format 'cades-b-lt' is a CAdES
-- B-T whose SignedData also carries the CA and TSA certificates and the service's CRLs.
ALTER TABLE signing_records DROP CONSTRAINT signing_records_signature_format_check;
ALTER TABLE signing_records ADD CONSTRAINT signing_records_signature_format_check
    CHECK (signature_format IN ('raw', 'cades', 'cades-b-lt', 'pades'));
