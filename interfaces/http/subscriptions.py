"""Subscriptions over HTTP: register an internal app's endpoint, list, pause, resume, rewind,
remove, and read its attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter

from domain.instants import format_instant
from infrastructure.subscriptions import Subscription as Stored
from infrastructure.subscriptions import SubscriptionStore
from interfaces.bootstrap import Parts
from interfaces.http.auth import BEARER, KEY_REFUSALS, require_operate
from interfaces.http.pagination import DeliveryCursor, delivery_cursor, next_cursor
from interfaces.http.schemas import (
    Attempt,
    AttemptPage,
    CreatedSubscription,
    LastAttempt,
    NewSubscription,
    Problem,
    Rewind,
    Subscription,
    SubscriptionPatch,
)

REFUSED = {
    400: ResponseSpec(Problem, description="the body or a parameter is invalid"),
    **KEY_REFUSALS,
}
NOT_FOUND = {404: ResponseSpec(Problem, description="no subscription with that id")}


def _instant(sortable: str) -> str:
    return format_instant(datetime.fromisoformat(sortable))


def shown(store: SubscriptionStore, subscription: Stored) -> Subscription:
    last = store.last_attempt(subscription.id)
    return Subscription(
        id=subscription.id,
        url=subscription.url,
        description=subscription.description,
        types=list(subscription.types),
        statuses=list(subscription.statuses),
        state=subscription.state,  # type: ignore[arg-type]
        position=subscription.position,
        lag=store.lag(subscription),
        last_attempt=(
            LastAttempt(at=_instant(last.at), status=last.status, error=last.error)
            if last
            else None
        ),
        disabled_reason=subscription.disabled_reason,
    )


class SubscriptionController(Controller):
    path = "/subscriptions"
    tags = ("subscriptions",)
    guards = [require_operate]  # noqa: RUF012 - Litestar's own attribute type
    security = [BEARER]  # noqa: RUF012

    @post(
        "/",
        operation_id="createSubscription",
        summary="Register an endpoint for the changes it wants, from now on",
        description=(
            "The answer holds the subscription's whsec_ secret, shown only here: the endpoint "
            "checks each POST's Standard Webhooks signature with it. It gets the changes "
            "recorded from now on; rewind it for earlier ones."
        ),
        status_code=201,
        sync_to_thread=True,
        responses=REFUSED,
    )
    def create(
        self, data: JSONBody[NewSubscription], parts: NamedDependency[Parts]
    ) -> CreatedSubscription:
        made, secret = parts.subscriptions.create(
            data.url, data.types, data.statuses, data.description
        )
        return CreatedSubscription(
            id=made.id,
            secret=secret,
            url=made.url,
            description=made.description,
            types=list(made.types),
            statuses=list(made.statuses),
            state=made.state,  # type: ignore[arg-type]
            position=made.position,
        )

    @get(
        "/",
        operation_id="listSubscriptions",
        summary="Every subscription with its state, position, lag and last attempt",
        sync_to_thread=True,
        responses=REFUSED,
    )
    def list_subscriptions(self, parts: NamedDependency[Parts]) -> list[Subscription]:
        store = parts.subscriptions
        return [shown(store, subscription) for subscription in store.all()]

    @get(
        "/{subscription_id:str}",
        operation_id="getSubscription",
        summary="One subscription",
        sync_to_thread=True,
        responses={**REFUSED, **NOT_FOUND},
    )
    def get_subscription(
        self, subscription_id: FromPath[str], parts: NamedDependency[Parts]
    ) -> Subscription:
        store = parts.subscriptions
        return shown(store, store.get(subscription_id))

    @patch(
        "/{subscription_id:str}",
        operation_id="updateSubscription",
        summary="Pause it, or make it active again (a disabled one too)",
        sync_to_thread=True,
        responses={**REFUSED, **NOT_FOUND},
    )
    def update(
        self,
        subscription_id: FromPath[str],
        data: JSONBody[SubscriptionPatch],
        parts: NamedDependency[Parts],
    ) -> Subscription:
        store = parts.subscriptions
        return shown(store, store.set_state(subscription_id, data.state))

    @post(
        "/{subscription_id:str}/rewind",
        operation_id="rewindSubscription",
        summary="Send again every matching change after a position",
        description="The changes sent again carry new webhook-ids (a receiver takes them again).",
        status_code=200,
        sync_to_thread=True,
        responses={**REFUSED, **NOT_FOUND},
    )
    def rewind(
        self, subscription_id: FromPath[str], data: JSONBody[Rewind], parts: NamedDependency[Parts]
    ) -> Subscription:
        store = parts.subscriptions
        return shown(store, store.rewind(subscription_id, data.after))

    @delete(
        "/{subscription_id:str}",
        operation_id="deleteSubscription",
        summary="Remove it and its attempts log",
        sync_to_thread=True,
        responses={**REFUSED, **NOT_FOUND},
    )
    def remove(self, subscription_id: FromPath[str], parts: NamedDependency[Parts]) -> None:
        parts.subscriptions.remove(subscription_id)

    @get(
        "/{subscription_id:str}/attempts",
        operation_id="listSubscriptionAttempts",
        summary="Its delivery attempts, newest first, in keyset pages",
        sync_to_thread=True,
        responses={**REFUSED, **NOT_FOUND},
    )
    def attempts(
        self,
        subscription_id: FromPath[str],
        parts: NamedDependency[Parts],
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: DeliveryCursor = None,
    ) -> AttemptPage:
        store = parts.subscriptions
        store.get(subscription_id)  # a 404 for an unknown one
        found = store.attempts(subscription_id, limit + 1, delivery_cursor(cursor))
        page = found[:limit]
        return AttemptPage(
            items=[
                Attempt(
                    id=a.id,
                    at=_instant(a.at),
                    position=a.position,
                    webhook_id=a.webhook_id,
                    status=a.status,
                    error=a.error,
                    duration_ms=a.duration_ms,
                )
                for a in page
            ],
            next_cursor=next_cursor(page[-1].id if len(found) > limit else None),
        )
