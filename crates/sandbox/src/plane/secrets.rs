//! A task's secrets, resolved when it starts as the ECS agent resolves them: each `valueFrom`
//! of the container definition read from Secrets Manager (`GetSecretValue`, with the JSON key,
//! version stage and version id an ARN may end with) or SSM Parameter Store (`GetParameters`
//! with decryption, by ARN or name). A secret that cannot be read stops the task with the
//! reason ECS gives (`ResourceInitializationError: unable to pull secrets or registry auth:
//! ...`), which counts as a failed start of the service.

use aws_smithy_types::error::display::DisplayErrorContext;

use super::Clients;

/// The environment variables `secrets` (name, `valueFrom`) give, or the task's stopped reason.
pub(crate) async fn resolve(
    c: &Clients,
    secrets: &[(String, String)],
) -> Result<Vec<(String, String)>, String> {
    let mut env = Vec::with_capacity(secrets.len());
    for (name, from) in secrets {
        let value = if is_secrets_manager(from) {
            secrets_manager(c, from).await.map_err(|e| {
                format!(
                    "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: unable to retrieve secret from asm: failed to fetch secret {from} from secrets manager: {e}"
                )
            })?
        } else {
            parameter(c, from).await.map_err(|e| {
                format!(
                    "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: unable to retrieve secrets from ssm: {e}"
                )
            })?
        };
        env.push((name.clone(), value));
    }
    Ok(env)
}

fn is_secrets_manager(from: &str) -> bool {
    from.starts_with("arn:") && from.split(':').nth(2) == Some("secretsmanager")
}

/// `arn:P:secretsmanager:R:A:secret:NAME[:json-key:version-stage:version-id]`.
async fn secrets_manager(c: &Clients, from: &str) -> Result<String, String> {
    let parts: Vec<&str> = from.split(':').collect();
    let id = parts.get(..7).map(|p| p.join(":")).unwrap_or_default();
    let extra = |i: usize| parts.get(i).copied().filter(|s| !s.is_empty());
    let out =
        c.sm.get_secret_value()
            .secret_id(&id)
            .set_version_stage(extra(8).map(str::to_owned))
            .set_version_id(extra(9).map(str::to_owned))
            .send()
            .await
            .map_err(|e| DisplayErrorContext(&e).to_string())?;
    let Some(text) = out.secret_string() else {
        return Err("the secret holds binary data, which ECS cannot put in a variable".to_owned());
    };
    let Some(key) = extra(7) else {
        return Ok(text.to_owned());
    };
    let doc: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("the secret is not a JSON object, so it has no key {key:?}: {e}"))?;
    match doc.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(format!("the secret's JSON has no key {key:?}")),
    }
}

async fn parameter(c: &Clients, from: &str) -> Result<String, String> {
    let out = c
        .ssm
        .get_parameters()
        .names(from)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| DisplayErrorContext(&e).to_string())?;
    if !out.invalid_parameters().is_empty() {
        return Err(format!(
            "invalid ssm parameters: {}",
            out.invalid_parameters().join(", ")
        ));
    }
    out.parameters()
        .first()
        .and_then(|p| p.value())
        .map(str::to_owned)
        .ok_or_else(|| format!("invalid ssm parameters: {from}"))
}
