"""Tenant scoping in one place.

Every tenant-owned model inherits `TenantOwned`; every read path goes through
`.for_tenant(tenant)`, and every lookup by id through `access_object`, which raises the same
`NotFound` whether the row is missing or belongs to another tenant. A reviewer can grep for
`for_tenant(` and `access_` to see every path.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, TypeVar, cast

from django.core.exceptions import ValidationError
from django.db import models
from rest_framework.exceptions import NotFound

from agentplatform.core.dbrouter import reads_from_primary

if TYPE_CHECKING:
    from agentplatform.models import Tenant

M = TypeVar("M", bound="TenantOwned")


class TenantQuerySet(models.QuerySet[M]):
    def for_tenant(self, tenant: Tenant) -> TenantQuerySet[M]:
        return self.filter(tenant=tenant)


class TenantOwned(models.Model):
    """A row that belongs to one tenant. `tenant_id` is indexed for row-level security."""

    tenant = models.ForeignKey("agentplatform.Tenant", on_delete=models.CASCADE, db_index=True)

    objects: Any = TenantQuerySet.as_manager()

    class Meta:
        abstract = True


def access_object(
    model: type[M],
    *,
    tenant: Tenant,
    id: uuid.UUID | str | int,
    queryset: models.QuerySet[M] | None = None,
) -> M:
    """The tenant's row with this id, or one uniform NotFound (missing or foreign alike).

    A malformed id is "not found" too: telling it apart would only help someone probing ids.
    Read from the primary even in a list that may lag: a row its client has just created
    is found at once, and a list of its children is never a 404 because of the replica.
    """
    try:
        rows = model.objects.all() if queryset is None else queryset
        with reads_from_primary():
            return cast(M, rows.filter(tenant=tenant).get(pk=id))
    except (model.DoesNotExist, ValueError, ValidationError):
        raise NotFound(f"No {model._meta.verbose_name} with this id.") from None
