"""Clients wired like services.py, over a plain session that `responses` intercepts."""

from __future__ import annotations

import requests

from work365_fn.adapters.auth import StaticTokenProvider, TokenProvider
from work365_fn.adapters.dataverse import REQUEST_ID_HEADER, DataverseClient
from work365_fn.adapters.dataverse import parse_error as dataverse_error
from work365_fn.adapters.partner_center import PartnerCenterClient
from work365_fn.adapters.partner_center import parse_error as partner_center_error
from work365_fn.adapters.transport import RetryPolicy, ServiceApi, Transport

from .shapes import ORG, PC

# Long enough to look like a JWT: redaction ignores very short values.
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.contract-test-token"
CORRELATION_ID = "aaaa0000-bb11-2222-33cc-444444dddddd"


def policy(sleeps: list[float], max_attempts: int = 3, max_seconds: float = 60.0) -> RetryPolicy:
    return RetryPolicy(max_attempts=max_attempts, max_seconds=max_seconds, sleep=sleeps.append)


def pc_client(
    retry: RetryPolicy, tokens: TokenProvider | None = None, page_size: int = 500
) -> PartnerCenterClient:
    transport = Transport(
        ServiceApi("partnerCenter", partner_center_error, "MS-RequestId"),
        requests.Session(),
        tokens or StaticTokenProvider(TOKEN),
        retry,
    )
    return PartnerCenterClient(PC, transport, CORRELATION_ID, page_size=page_size)


def dv_client(
    retry: RetryPolicy, tokens: TokenProvider | None = None, page_size: int = 5000
) -> DataverseClient:
    transport = Transport(
        ServiceApi("dataverse", dataverse_error, REQUEST_ID_HEADER),
        requests.Session(),
        tokens or StaticTokenProvider(TOKEN),
        retry,
    )
    return DataverseClient(ORG, transport, page_size=page_size)
