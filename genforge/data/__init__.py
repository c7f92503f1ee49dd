"""The data stage: read raw files, clean, scrub PII, deduplicate, train a tokenizer, pack token files."""
