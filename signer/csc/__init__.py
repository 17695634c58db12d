"""The Cloud Signature Consortium API (issue 6)."""
