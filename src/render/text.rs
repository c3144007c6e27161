//! The text `flotilla render` prints: multi-document YAML with a comment before each document
//! naming its profile and source, so a reader can trace every object back to the repo.

use std::fmt::Write;

use super::RenderedProfile;
use crate::config::{DeploymentType, HelmChartAction};

/// Formats rendered profiles of one cluster as commented multi-document YAML.
pub fn to_text(cluster: &str, profiles: &[RenderedProfile]) -> String {
    let mut out = String::new();
    for profile in profiles {
        for object in &profile.objects {
            let _ = writeln!(out, "---");
            let _ = write!(
                out,
                "# profile: {}  source: {}",
                profile.profile, object.source
            );
            if object.deployment_type == DeploymentType::Local {
                let _ = write!(out, "  deploymentType: Local (management cluster)");
            }
            out.push('\n');
            out.push_str(&yaml(&object.object));
        }
        for k in &profile.kustomizations {
            let _ = writeln!(out, "---");
            let _ = writeln!(
                out,
                "# profile: {}  kustomize: {} (not expanded: no kustomize binary; see --kustomize-bin)",
                profile.profile, k.path
            );
        }
        for release in &profile.releases {
            let _ = writeln!(out, "---");
            let _ = writeln!(
                out,
                "# profile: {}  helm release: {}/{}",
                profile.profile, release.namespace, release.name
            );
            let _ = writeln!(
                out,
                "#   chart: {} {} from {}",
                release.chart, release.version, release.repository
            );
            let action = match release.action {
                HelmChartAction::Install => "Install",
                HelmChartAction::Uninstall => "Uninstall",
            };
            let _ = writeln!(out, "#   action: {action}");
            if release.credentials.is_some() {
                let _ = writeln!(out, "#   credentials: from registryCredentialsConfig");
            }
            if let Some((namespace, name)) = &release.credentials_ref {
                let _ = writeln!(
                    out,
                    "#   credentials: Secret {namespace}/{name} of the management cluster (not in sources/; read at sync time)"
                );
            }
            let shown = crate::helm::redact_values(&release.values, &release.secret_paths);
            if shown.as_object().is_none_or(|m| m.is_empty()) {
                let _ = writeln!(out, "#   values: {{}}");
            } else {
                let _ = writeln!(out, "#   values:");
                for line in yaml(&shown).trim_end().lines() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let _ = writeln!(out, "#     {line}");
                }
            }
        }
        for reason in &profile.pending {
            let _ = writeln!(out, "---");
            let _ = writeln!(
                out,
                "# profile: {}  pending on {cluster}: {reason}",
                profile.profile
            );
        }
    }
    out
}

fn yaml(value: &serde_json::Value) -> String {
    match serde_saphyr::to_string(value) {
        Ok(text) => {
            let text = text.strip_prefix("---\n").unwrap_or(&text).to_string();
            if text.ends_with('\n') {
                text
            } else {
                text + "\n"
            }
        }
        Err(e) => format!("# cannot serialize object: {e}\n"),
    }
}
