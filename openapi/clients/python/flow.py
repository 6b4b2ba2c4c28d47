"""The client openapi-python-client generates from openapi/openapi.json, driving the flow
against a live server and checking every answer (openapi/clients/check runs it).

Usage: python flow.py BASE_URL API_KEY   (the generated package `switchboard_client` on sys.path)
"""

import sys
from http import HTTPStatus

from switchboard_client import AuthenticatedClient
from switchboard_client.api.clients import register, unregister
from switchboard_client.api.messages import broadcast, publish
from switchboard_client.api.operations import stats
from switchboard_client.api.topics import create_topic, get_topic_history, list_topics, subscribe
from switchboard_client.models import (
    CreateTopicRequest,
    ErrorBody,
    Recipients,
    RegisterRequest,
    Registered,
    SendRequest,
    Stats,
    SubscriptionRequest,
    Topic,
    TopicHistory,
    Unregistered,
)


def expect(response, status, model):
    """The parsed body of `response`, which must have `status` and parse as `model`."""
    assert response.status_code == status, (response.status_code, response.content)
    assert isinstance(response.parsed, model), (type(response.parsed), response.content)
    return response.parsed


def main(base_url: str, key: str) -> None:
    # The key is configured once, as the spec's ApiKey security scheme says.
    api = AuthenticatedClient(base_url=base_url, token=key, prefix="", auth_header_name="X-Api-Key")
    wrong = AuthenticatedClient(base_url=base_url, token="wrong", prefix="", auth_header_name="X-Api-Key")

    alice = expect(register.sync_detailed(client=api, body=RegisterRequest(name="py-alice")),
                   HTTPStatus.CREATED, Registered)
    assert alice.name == "py-alice" and alice.ws_url.endswith(f"/ws/{alice.id}"), alice

    taken = expect(register.sync_detailed(client=api, body=RegisterRequest(name="py-alice")),
                   HTTPStatus.CONFLICT, ErrorBody)
    assert taken.error == "name_taken", taken
    refused = expect(register.sync_detailed(client=wrong, body=RegisterRequest(name="py-bob")),
                     HTTPStatus.FORBIDDEN, ErrorBody)
    assert (refused.error, refused.message) == ("forbidden", "invalid API key"), refused

    topic = expect(create_topic.sync_detailed(client=api, body=CreateTopicRequest(name="py-topic")),
                   HTTPStatus.CREATED, Topic)
    assert (topic.name, topic.subscribers) == ("py-topic", 0), topic
    answer = subscribe.sync_detailed(client=api, body=SubscriptionRequest(id=alice.id, topics=["py-topic"]))
    assert answer.status_code == HTTPStatus.ACCEPTED, answer.content

    sent = expect(publish.sync_detailed("py-topic", client=api, body=SendRequest(message={"n": 1}, id=alice.id)),
                  HTTPStatus.OK, Recipients)
    assert (sent.recipients, sent.offset) == (1, 1), sent
    kept = expect(get_topic_history.sync_detailed("py-topic", client=api, since=0, epoch=sent.epoch),
                  HTTPStatus.OK, TopicHistory)
    assert kept.complete and [m.offset for m in kept.messages] == [1], kept
    missing = expect(publish.sync_detailed("nope", client=api, body=SendRequest(message=1)),
                     HTTPStatus.NOT_FOUND, ErrorBody)
    assert missing.error == "topic_not_found", missing
    sent = expect(broadcast.sync_detailed(client=api, body=SendRequest(message=None)), HTTPStatus.OK, Recipients)
    assert sent.recipients >= 1, sent

    topics = list_topics.sync_detailed(client=api)
    assert topics.status_code == HTTPStatus.OK, topics.content
    listed = {t.name: t.subscribers for t in topics.parsed}
    assert listed.get("py-topic") == 1, listed
    counters = expect(stats.sync_detailed(client=api), HTTPStatus.OK, Stats)
    assert counters.connections >= 0, counters

    gone = expect(unregister.sync_detailed(alice.id, client=api), HTTPStatus.OK, Unregistered)
    assert (gone.id, gone.closed_connections) == (alice.id, 0), gone
    again = expect(unregister.sync_detailed(alice.id, client=api), HTTPStatus.CONFLICT, ErrorBody)
    assert again.error == "unknown_client", again
    print("python client: register, 409, 403, create topic, subscribe, publish, history, 404, broadcast, "
          "list topics, stats, unregister: all as expected")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
