"""The API-key lookup of every request as one SQL function (agentplatform/core/services.py).

A key names its tenant, so it is found across tenants. Done from Python that took three round
trips (enter the cross-tenant scope, look the key up, enter the tenant's scope); the function
sees every tenant's keys for its own statement only (its SET clause is undone when it
returns), so the caller can look the key up and enter the key's tenant in one statement.
It runs as the caller (not SECURITY DEFINER): the application's role could enter the
cross-tenant scope itself, so the function grants nothing new.
"""

from django.db import migrations

CREATE = """
CREATE FUNCTION agentplatform_api_key_credential(key_prefix text)
RETURNS TABLE (api_key agentplatform_apikey, tenant agentplatform_tenant)
LANGUAGE sql STABLE
SET app.all_tenants = 'on'
AS $$
    SELECT k, t
    FROM agentplatform_apikey k JOIN agentplatform_tenant t ON t.id = k.tenant_id
    WHERE k.prefix = key_prefix
$$;
"""

DROP = "DROP FUNCTION agentplatform_api_key_credential(text);"


class Migration(migrations.Migration):
    dependencies = [
        ("agentplatform", "0006_audit_chainer"),
    ]

    operations = [migrations.RunSQL(sql=CREATE, reverse_sql=DROP)]
