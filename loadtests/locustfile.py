"""Locust scenarios for fastctx: a claim-check chain, and conversations patched turn by turn."""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path
from typing import Any

from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser, FastResponse, ResponseContextManager
from locust.env import Environment
from locust.runners import WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

# Services that pass a claim-check token along; each hop reads the context once.
HOPS = ("gateway", "pricing", "fraud", "payment", "fulfilment")
# A conversation starts over after this many turns, so documents stay under 8 KiB.
TURNS_PER_CONVERSATION = 40
# Contexts and sessions made by the load test expire by themselves on a shared deployment.
TTL = 600

API_KEY = os.environ.get("FASTCTX_API_KEY")
AUTH = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}
JSON = {**AUTH, "Content-Type": "application/json"}
MERGE_PATCH = {**AUTH, "Content-Type": "application/merge-patch+json"}

# Tokens of the conversations being written now, for the readers (users share one process).
LIVE_CONVERSATIONS: set[str] = set()


@events.quitting.add_listener
def write_final_stats(environment: Environment, **_: Any) -> None:
    """Rewrite locust's CSV files with the final numbers and leave the totals for run.py.

    Locust refreshes its CSV files once a second, so on their own they miss the end of the run.
    """
    if isinstance(environment.runner, WorkerRunner):
        return  # with --processes, the master holds the totals
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        snapshot = StatsCSV(environment, PERCENTILES_TO_REPORT)
        for suffix, write in (
            ("stats", snapshot.requests_csv),
            ("failures", snapshot.failures_csv),
            ("exceptions", snapshot.exceptions_csv),
        ):
            path = Path(f"{prefix}_{suffix}.csv")
            partial = path.with_name(f".{path.name}.partial")
            with partial.open("w", newline="") as f:
                write(csv.writer(f))
            # A new file, not a rewrite: locust's own writer still holds the old one open.
            os.replace(partial, path)
    if path_of_totals := os.environ.get("FASTCTX_LOAD_TOTALS"):
        total = environment.stats.total
        totals = {"requests": total.num_requests, "failures": total.num_failures}
        Path(path_of_totals).write_text(json.dumps(totals))


def order_context(rng: random.Random) -> bytes:
    """A checkout's state of about 1 KiB, as the first service of a chain would store it."""
    items = [
        {"sku": f"SKU-{rng.randint(10_000, 99_999)}", "qty": rng.randint(1, 3), "price": 19.99}
        for _ in range(17)
    ]
    doc = {
        "order": f"ord_{rng.getrandbits(64):016x}",
        "status": "received",
        "currency": "EUR",
        "customer": {"id": f"c_{rng.randint(1, 10**6)}", "tier": "silver", "country": "DE"},
        "shipping": {"method": "express", "city": "Berlin", "zip": "10115"},
        "items": items,
        "trace": f"{rng.getrandbits(128):032x}",
        "note": "Leave at the door if nobody answers; call before delivery after 6 pm please.",
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def expect(response: ResponseContextManager, *statuses: int) -> bool:
    """Mark the request failed unless its status is one of `statuses`."""
    if response.status_code in statuses:
        return True
    if response.status_code == 0:  # no HTTP answer at all: refused, reset, timed out
        response.failure(f"no response: {response.error!r}")
    else:
        got = f"status {response.status_code}, expected {' or '.join(map(str, statuses))}"
        response.failure(f"{got}: {response.text!r}"[:300])
    return False


def body(response: FastResponse) -> Any:
    return json.loads(response.content or b"null")


class ClaimCheck(FastHttpUser):
    """The first service stores the context; the next five read it by token, then it is done."""

    weight = 2
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.rng = random.Random()

    @task
    def chain(self) -> None:
        document = order_context(self.rng)
        with self.client.post(
            f"/v1/contexts?ttl={TTL}",
            data=document,
            headers=JSON,
            name="POST /v1/contexts (claim check)",
            catch_response=True,
        ) as response:
            if not expect(response, 201):
                return
            token = body(response)["token"]
        for hop in HOPS:
            with self.client.get(
                f"/v1/contexts/{token}",
                headers=AUTH,
                name=f"GET /v1/contexts/[token] ({hop})",
                catch_response=True,
            ) as response:
                # Every hop must see the document byte for byte as it was stored.
                if expect(response, 200) and response.content != document:
                    response.failure("the context read back differs from the one stored")
        with self.client.delete(
            f"/v1/contexts/{token}",
            headers=AUTH,
            name="DELETE /v1/contexts/[token] (done)",
            catch_response=True,
        ) as response:
            expect(response, 204)


class ConversationWriter(FastHttpUser):
    """An LLM app: a session holds a conversation context; each turn is one merge patch."""

    weight = 1
    wait_time = between(0.0, 0.1)

    def on_start(self) -> None:
        self.token: str | None = None
        self.session: str | None = None
        self.version = 0
        self.turn = 0

    def on_stop(self) -> None:
        self.finish()

    def begin(self) -> bool:
        with self.client.post(
            "/v1/sessions",
            data=json.dumps({"ttl": TTL, "meta": {"app": "loadtest"}}),
            headers=JSON,
            name="POST /v1/sessions",
            catch_response=True,
        ) as response:
            if not expect(response, 201):
                return False
            self.session = body(response)["session"]
        start = {"model": "gpt-large", "status": "active", "turns": {}}
        with self.client.post(
            f"/v1/contexts?session={self.session}",
            data=json.dumps(start),
            headers=JSON,
            name="POST /v1/contexts?session (conversation)",
            catch_response=True,
        ) as response:
            if not expect(response, 201):
                return False
            self.token = body(response)["token"]
        self.version, self.turn = 1, 0
        LIVE_CONVERSATIONS.add(self.token)
        return True

    def finish(self) -> None:
        if self.token is not None:
            # Readers stop picking it before it goes, so their 404s are only ever real ones.
            LIVE_CONVERSATIONS.discard(self.token)
            self.token = None
        if self.session is not None:
            with self.client.delete(
                f"/v1/sessions/{self.session}",
                headers=AUTH,
                name="DELETE /v1/sessions/[id]",
                catch_response=True,
            ) as response:
                expect(response, 204)
            self.session = None

    @task
    def turn_taken(self) -> None:
        if self.token is None and not self.begin():
            return
        self.turn += 1
        role = "user" if self.turn % 2 else "assistant"
        patch = {
            "status": "awaiting_user" if role == "assistant" else "thinking",
            "turns": {
                f"t{self.turn:04d}": {
                    "role": role,
                    "content": "Where is my parcel? It was due yesterday. " * 3,
                    "tokens": 27,
                }
            },
        }
        # This user is the only writer, so If-Match always holds: a 412 is a lost update.
        with self.client.patch(
            f"/v1/contexts/{self.token}",
            data=json.dumps(patch),
            headers={**MERGE_PATCH, "If-Match": f'"{self.version}"'},
            name="PATCH /v1/contexts/[token] (turn)",
            catch_response=True,
        ) as response:
            if not expect(response, 200):
                return
            version = body(response)["version"]
            if version != self.version + 1:
                response.failure(f"version {version} after {self.version}")
            self.version = version
        if self.turn >= TURNS_PER_CONVERSATION:
            self.finish()


class ConversationReader(FastHttpUser):
    """A UI or agent polling a live conversation, revalidating with the ETag it last saw."""

    weight = 2
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.etags: dict[str, str] = {}

    @task
    def read(self) -> None:
        if not LIVE_CONVERSATIONS:
            return
        token = random.choice(tuple(LIVE_CONVERSATIONS))
        headers = dict(AUTH)
        if token in self.etags:
            headers["If-None-Match"] = self.etags[token]
        with self.client.get(
            f"/v1/contexts/{token}",
            headers=headers,
            name="GET /v1/contexts/[token] (conversation)",
            catch_response=True,
        ) as response:
            if response.status_code == 404 and token not in LIVE_CONVERSATIONS:
                response.success()  # finished between the pick and the read
                self.etags.pop(token, None)
                return
            if not expect(response, 200, 304):
                return
            if response.status_code == 200:
                if "turns" not in body(response):
                    response.failure("not a conversation")
                self.etags[token] = response.headers.get("ETag", "")
        if len(self.etags) > 1000:
            self.etags.clear()
