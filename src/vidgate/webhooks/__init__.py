"""Webhooks, following the Standard Webhooks spec (https://www.standardwebhooks.com): signed with the
`standardwebhooks` library, retried with backoff, logged per attempt, redeliverable.

    targets.py     what a webhook URL may be (checked when given; the SSRF guard of media/fetch.py)
    signing.py     account secrets ("whsec_...") and the webhook-id/-timestamp/-signature headers
    endpoints.py   the account's endpoint: its URL and secret
    outbox.py      job events -> PENDING deliveries, in the transaction that records the event
    deliveries.py  the delivery table: claim with a lease, record an attempt, list, redeliver
    dispatcher.py  the API node's background task that sends what is due

Nothing is imported here: jobs/store.py imports outbox.py, which must not pull in the modules that import the
job store back (dispatcher.py).
"""
