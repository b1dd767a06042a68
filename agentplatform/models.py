"""Tenants, their operators, API keys and idempotency records."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar, TypeVar

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.dispatch import Signal

from agentplatform.core.tenancy import TenantOwned, TenantQuerySet

M = TypeVar("M", bound=models.Model)

# Sent after a queryset's update() changed tenants or API keys (`tenant_ids`: whose; `using`:
# its database). A model's save and delete say it through post_save/post_delete; both reach
# every process's kept keys (agentplatform.core.keycache), which an update would leave stale.
credentials_changed = Signal()


def _update_announcing(
    queryset: models.QuerySet[M], tenant_field: str, changes: dict[str, Any]
) -> int:
    """`queryset.update(**changes)`, announcing the tenants it changed (read before, since
    the update may move rows out of the queryset's filter)."""
    tenant_ids = set(queryset.values_list(tenant_field, flat=True))
    count = models.QuerySet.update(queryset, **changes)
    credentials_changed.send(sender=queryset.model, tenant_ids=tenant_ids, using=queryset.db)
    return count


class TenantRowQuerySet(models.QuerySet["Tenant"]):
    def update(self, **changes: Any) -> int:
        return _update_announcing(self, "pk", changes)


class ApiKeyQuerySet(TenantQuerySet["ApiKey"]):
    def update(self, **changes: Any) -> int:
        if set(changes) <= ApiKey.UNCACHED_FIELDS:
            return super().update(**changes)
        return _update_announcing(self, "tenant_id", changes)


class Tenant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(
        max_length=63,
        unique=True,
        validators=[RegexValidator(r"^[a-z0-9][a-z0-9-]*$", "Lowercase letters, digits, dashes.")],
    )
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # The tenant's own API request budget, set by the platform's operators (a bigger plan,
    # a load test); empty means API_THROTTLE_RATE.
    api_rate = models.CharField(
        max_length=20,
        blank=True,
        default="",
        validators=[RegexValidator(r"^[1-9][0-9]{0,8}/(s|m|h|d)[a-z]*$", "A rate like 6000/min.")],
        help_text="Requests per period, like 6000/min or 100/s; empty for the platform default.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantRowQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Membership(TenantOwned):
    """An operator (a Django user) of a tenant, with a role."""

    class Role(models.TextChoices):
        VIEWER = "viewer"
        MANAGER = "manager"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant_id} ({self.role})"


class ApiKey(TenantOwned):
    """A bearer key `ap_<prefix>_<secret>`: looked up by prefix, verified by SHA-256 hash.

    The secret is random (256 bits), so a fast hash is safe here; only the hash is stored and
    the full key is shown once, when created.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, unique=True)
    hashed_secret = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects: ClassVar[Any] = ApiKeyQuerySet.as_manager()

    # Fields whose change is no news to the processes that keep keys: the authentication
    # reads none of them to decide (it updates last_used_at itself, at most once a minute).
    UNCACHED_FIELDS = frozenset({"last_used_at"})

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"ap_{self.prefix}_…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class IdempotencyRecord(TenantOwned):
    """The first response to a POST carrying an `Idempotency-Key`, replayed on repeats."""

    key = models.CharField(max_length=255)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=500)
    fingerprint = models.CharField(max_length=64)  # sha256 of the request body
    status_code = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    # While a first request runs, repeats wait or get 409; past this time another may take over.
    locked_until = models.DateTimeField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "key"], name="idempotency_unique_key")
        ]


class AuditEvent(models.Model):
    """An append-only, hash-chained record of a change (see agentplatform/core/audit.py).

    A service inserts its event with the chain fields empty (no lock, nothing read); the
    chainer then links each tenant's pending events into the tenant's chain, once: it sets
    `chain_seq` (1, 2, 3, ... per tenant) and `hash`, which covers the event's fields and the
    previous event's hash, so editing or deleting any chained event breaks every later link.
    A database trigger refuses DELETE, and every UPDATE but that one linking of a pending
    event; `manage.py verify_audit` chains what is pending, then checks the chains. Events
    outlive their tenant (no foreign-key cascade), as a compliance record should.
    """

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(
        Tenant, null=True, on_delete=models.DO_NOTHING, db_constraint=False, db_index=True
    )
    actor_kind = models.CharField(max_length=16)  # api_key | operator | system
    actor_id = models.CharField(max_length=100)
    action = models.CharField(max_length=100)
    target_type = models.CharField(max_length=100)
    target_id = models.CharField(max_length=100)
    payload = models.JSONField(default=dict)
    payload_digest = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    # The chain: NULL while the event is pending, set once by the chainer. NULL rather than
    # "" for the hashes: `hash` is unique, and many events may be pending at once.
    chain_seq = models.BigIntegerField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    hash = models.CharField(max_length=64, unique=True, null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["tenant", "id"], name="audit_tenant_chain"),
            # The chainer's work list: small, as events wait seconds at most.
            models.Index(
                fields=["tenant", "id"],
                name="audit_pending",
                condition=models.Q(chain_seq__isnull=True),
            ),
        ]
        constraints = [
            # One event per place in a chain; the platform's own events (no tenant) form
            # one chain too, hence NULLS NOT DISTINCT.
            models.UniqueConstraint(
                fields=["tenant", "chain_seq"],
                name="audit_chain_seq",
                condition=models.Q(chain_seq__isnull=False),
                nulls_distinct=False,
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor_kind}:{self.actor_id}"

    @property
    def pending(self) -> bool:
        """Not yet linked into its tenant's chain by the chainer."""
        return self.chain_seq is None


class TenantSecret(TenantOwned):
    """A tenant's secret, stored encrypted (agentplatform.core.vault); its value is never shown."""

    name = models.SlugField(max_length=100)
    ciphertext = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="tenant_secret_unique_name")
        ]

    def __str__(self) -> str:
        return self.name


class WebhookEndpoint(TenantOwned):
    """A tenant's receiver of webhook events (agentplatform.core.webhooks), signed by the
    Standard Webhooks scheme. Secrets are stored encrypted by the vault's cipher: the current
    one, and the ones rotated out, each with the time it stops signing."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    url = models.CharField(max_length=2048)
    description = models.CharField(max_length=500, blank=True, default="")
    events = models.JSONField(default=list)  # event types, agentplatform.core.webhooks.EVENTS
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True, default="")
    secret_ciphertext = models.TextField()
    # [{"ciphertext": ..., "expires_at": ISO 8601}], newest first.
    previous_secrets = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "webhook endpoint"
        indexes = [
            models.Index(fields=["tenant", "created_at"], name="webhook_endpoint_tenant_list"),
        ]

    def __str__(self) -> str:
        return self.url


class WebhookEvent(TenantOwned):
    """One event, sent to every endpoint subscribed when it happened. Its id is the
    `webhook-id` of every attempt to every endpoint, so receivers can drop duplicates; `body`
    is the exact JSON that is signed and sent."""

    id = models.CharField(primary_key=True, max_length=40, editable=False)
    type = models.CharField(max_length=64)
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class WebhookDelivery(TenantOwned):
    """One event to one endpoint: its attempts until it succeeds or the schedule ends. The
    row is the source of truth; Celery messages only wake it up (a lost one is found by the
    sweep through `next_attempt_at`)."""

    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for its next attempt (or in one)
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # the schedule ran out, or the endpoint answered 410 Gone
        CANCELLED = "cancelled"  # the endpoint was disabled before it could be delivered

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # Failed attempts since the schedule (re)started; a manual redelivery starts it again.
    scheduled_failures = models.PositiveIntegerField(default=0)
    # When the next attempt is due; while an attempt runs, when it counts as lost.
    next_attempt_at = models.DateTimeField(null=True)
    last_status_code = models.PositiveSmallIntegerField(null=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    last_latency_ms = models.PositiveIntegerField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "webhook delivery"
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event"], name="webhook_delivery_unique")
        ]
        indexes = [
            models.Index(fields=["endpoint", "created_at"], name="webhook_delivery_endpoint"),
            # The sweep: due deliveries of every tenant, a small index of the pending ones.
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_delivery_due",
                condition=models.Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} -> {self.endpoint_id} ({self.status})"


class WebhookAttempt(TenantOwned):
    """One POST of a delivery: what came back, or why nothing did."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="log")
    number = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True)
    latency_ms = models.PositiveIntegerField()
    error = models.CharField(max_length=500, blank=True, default="")
    response_excerpt = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_unique")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.status_code or self.error}"
