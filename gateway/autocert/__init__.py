"""Automatic certificates through ACME HTTP-01 (RFC 8555), with certbot's `acme` library.

- `files`: atomic writes of the key and chain, the account key (mode 0600).
- `issuer`: one synchronous order for all hosts (run in a thread; `requests` blocks).
- `renewal`: when to renew (pure) and the task that checks and renews with backoff.

The HTTP-01 answers are served by whoever owns the plain-HTTP listener through a
`ChallengeSink` (gateway/web/challenge.py's ChallengeStore is one).
"""
