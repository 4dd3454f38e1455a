"""work365-fn: associate new Microsoft CSP subscriptions with their Account's default Billing
Contract in Work 365 (Dataverse). See README.md."""

__version__ = "0.1.0"
