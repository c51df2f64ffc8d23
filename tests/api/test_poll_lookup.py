"""The poll's lookups through the HTTP API, on SQLite and PostgreSQL: on PostgreSQL the key and the job are one
lookup (the body is read before the caller is known), and what a client sees must not change with that: the
caller's errors come before the body's, a revoked key is refused at once, and a job is its owner's alone."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Api, t2v_body
from vidgate.accounts.keys import revoke_api_key, split_key

pytestmark = pytest.mark.both_backends

MODEL = "wan-2.5-preview-text-to-video"


async def queued_job(api: Api) -> tuple[str, str]:
    key = await api.new_key()
    response = await api.post("/video/queue", t2v_body(), key)
    assert response.status_code == 200, response.text
    return key, response.json()["queue_id"]


async def test_a_poll_of_ones_own_job_answers_its_status(api: Api) -> None:
    key, queue_id = await queued_job(api)
    response = await api.post("/video/retrieve", {"model": MODEL, "queue_id": queue_id}, key)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "PROCESSING"
    assert response.headers["x-venice-balance-usd"]


@pytest.mark.parametrize("body", [{"model": MODEL, "queue_id": "nope"}, {"model": MODEL}, "not json"])
async def test_a_wrong_key_is_401_whatever_the_body(api: Api, body: object) -> None:
    await queued_job(api)  # the key's account has a job: a wrong key still reads nothing of it
    content = body if isinstance(body, str) else None
    response = await api.client.post("/api/v1/video/retrieve", content=content,
                                      json=None if content else body,
                                      headers={"Authorization": "Bearer vg_0123456789ab_wrongsecret",
                                               "Content-Type": "application/json"})
    assert response.status_code == 401, response.text


async def test_the_bodys_errors_name_the_field_once_the_caller_is_known(api: Api) -> None:
    key, queue_id = await queued_job(api)
    bad_json = await api.client.post("/api/v1/video/retrieve", content="{not json",
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/json"})
    assert bad_json.status_code == 400, bad_json.text
    no_model = await api.post("/video/retrieve", {"queue_id": queue_id}, key)
    assert no_model.status_code == 400 and "model" in no_model.text
    no_id = await api.post("/video/retrieve", {"model": MODEL}, key)
    assert no_id.status_code == 400 and "queue_id" in no_id.text
    numeric_id = await api.post("/video/retrieve", {"model": MODEL, "queue_id": 7}, key)
    assert numeric_id.status_code == 400 and "queue_id" in numeric_id.text


async def test_another_accounts_job_is_not_found_and_a_revoked_key_is_refused_at_once(api: Api) -> None:
    key, queue_id = await queued_job(api)
    stranger = await api.new_key()
    body = {"model": MODEL, "queue_id": queue_id}
    assert (await api.post("/video/retrieve", body, stranger)).status_code == 404
    assert (await api.post("/video/retrieve", body, key)).status_code == 200
    key_id = split_key(key)
    assert key_id is not None
    await api.ctx.db.write(lambda conn: revoke_api_key(conn, key_id[0]))
    assert (await api.post("/video/retrieve", body, key)).status_code == 401


async def test_polls_made_together_each_answer_their_own_job(api: Api) -> None:
    """On PostgreSQL polls that arrive together share one statement (batched_lookups.py); each must still get
    its own answer: its job, a stranger's 404, a missing job's 404, a bad key's 401."""
    owned = [await queued_job(api) for _ in range(4)]
    stranger = await api.new_key()
    _, first_id = owned[0]
    cases: list[tuple[str, str, int]] = []
    for key, queue_id in owned:
        cases += [(key, queue_id, 200)] * 3
    cases += [
        (stranger, first_id, 404),  # another account's job
        (owned[1][0], first_id, 404),
        (stranger, "no-such-job", 404),
        (owned[0][0], first_id + "x" * 40, 404),  # a longer id that starts with a real one
        (owned[0][0], first_id[:-1] + "\x00", 400),  # a value PostgreSQL cannot store: refused, this poll alone
        ("vg_0123456789ab_wrongsecret", first_id, 401),
    ]
    answers = await asyncio.gather(*(api.post("/video/retrieve", {"model": MODEL, "queue_id": queue_id}, key)
                                     for key, queue_id, _ in cases))
    assert [a.status_code for a in answers] == [status for _, _, status in cases], [a.text for a in answers]
    assert answers[-2].json()["error"].startswith("queue_id: ")
