//! The objects an Endpoint owns, built without a client: per version a Deployment of
//! `toucan-worker serve` (and a HorizontalPodAutoscaler when the endpoint scales on CPU), the
//! router's Deployment and the Service in front of the router; with `router.gateway`, also a
//! Service per version and the Gateway API `HTTPRoute` that splits between them.
//!
//! Every child carries the Endpoint as its controlling owner, so deleting the Endpoint lets
//! the garbage collector remove them; names are derived from the endpoint and the version, so
//! a repeated reconcile applies the same objects again. Pods listen on their own pod IP
//! (`$(POD_IP):8080`): on a real cluster that is the pod's interface, and on the test
//! cluster's process-mode nodes every pod shares this machine's ports, so binding all
//! interfaces would collide.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretEnvSource, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;
use toucan_core::api::{EndpointSpec, GatewaySpec, ModelVersion};

use super::{
    COMPONENT_LABEL, ENDPOINT_ANNOTATION, ENDPOINT_LABEL, ENDPOINT_UID_LABEL, ROUTER_COMPONENT,
    SERVER_COMPONENT, VERSION_LABEL,
};
use crate::run::pods::{MANAGED_BY, MANAGED_BY_LABEL, dns_label, empty_dir, resources, restricted};

/// The port every model server and the router listen on, in their pods.
pub const SERVING_PORT: i32 = 8080;
/// The Service's port: `http://NAME.NS.svc` needs none written.
pub const SERVICE_PORT: i32 = 80;
/// Where a server pod's projected service-account token is: its credential for shipping
/// payload samples to the control-plane API.
pub const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Where a server keeps the model it fetched from the artifact store (an emptyDir).
const MODEL_CACHE: &str = "/toucan/models";
/// Home and temporary files (the root filesystem is read-only).
const WORK_DIR: &str = "/toucan/work";
/// An unprivileged user that no image maps to root (as step pods).
const SERVING_UID: i64 = 65532;
const PORT_NAME: &str = "http";

/// What every child of every Endpoint shares: the operator's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ServingDefaults {
    /// The image of `toucan-worker serve`.
    pub serving_image: String,
    /// The image holding `toucan-router` (the operator's).
    pub router_image: String,
    /// The service account of model-server pods (the step one: its token only identifies
    /// the pod to the control-plane API).
    pub service_account: String,
    /// The control-plane API's URL as pods reach it; without it the router cannot be told
    /// its configuration and samples are not shipped.
    pub api_url: Option<String>,
    /// The artifact store the models are read from.
    pub artifacts: String,
    /// A Secret whose keys become the servers' environment (the store's credentials).
    pub artifacts_secret: Option<String>,
}

/// The Endpoint the children belong to.
#[derive(Clone, Debug)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub reference: OwnerReference,
}

/// One version as it is to run.
#[derive(Clone, Debug)]
pub struct VersionPlan<'a> {
    pub version: &'a ModelVersion,
    /// The model bundle's digest, resolved.
    pub digest: String,
    /// The replica count to ask for; `None` when a HorizontalPodAutoscaler owns it.
    pub replicas: Option<u32>,
    /// The HorizontalPodAutoscaler's CPU target, when the endpoint scales on CPU.
    pub cpu_utilization: Option<u32>,
}

/// Every child of one Endpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Children {
    pub deployments: Vec<Deployment>,
    pub autoscalers: Vec<HorizontalPodAutoscaler>,
    pub service: Option<Service>,
    /// With `router.gateway`: one Service per version (`NAME-VERSION`), the route's backends.
    pub version_services: Vec<Service>,
    /// With `router.gateway`: the `HTTPRoute` (`gateway.networking.k8s.io/v1`), as JSON.
    pub route: Option<serde_json::Value>,
}

/// The Gateway API's route kind.
pub const ROUTE_GROUP: &str = "gateway.networking.k8s.io";
pub const ROUTE_VERSION: &str = "v1";
pub const ROUTE_KIND: &str = "HTTPRoute";

/// The Deployment of one version: `NAME-VERSION`.
pub fn server_name(endpoint: &str, version: &str) -> String {
    dns_label(&format!("{endpoint}-{version}"))
}

/// The router's Deployment: `NAME-router`.
pub fn router_name(endpoint: &str) -> String {
    dns_label(&format!("{endpoint}-router"))
}

/// The Service in front of the router: `NAME`.
pub fn service_name(endpoint: &str) -> String {
    dns_label(endpoint)
}

/// Where the router reads its configuration: the operator's own route.
pub fn router_config_url(api_url: &str, namespace: &str, endpoint: &str) -> String {
    format!(
        "{}/api/v1/namespaces/{namespace}/endpoints/{endpoint}/router-config",
        api_url.trim_end_matches('/')
    )
}

/// Every child of the endpoint, for the versions planned.
///
/// `weights` is each version's share of the gateway's traffic: the split in force, with no
/// share for a version that has no ready replica (a route's weights are relative, so the
/// others take its share in proportion, as the router does).
pub fn children(
    owner: &Owner,
    defaults: &ServingDefaults,
    spec: &EndpointSpec,
    versions: &[VersionPlan<'_>],
    weights: &BTreeMap<String, u32>,
) -> Children {
    let mut deployments: Vec<Deployment> = versions
        .iter()
        .map(|plan| server_deployment(owner, defaults, spec, plan))
        .collect();
    if let Some(router) = router_deployment(owner, defaults) {
        deployments.push(router);
    }
    let autoscalers = versions
        .iter()
        .filter_map(|plan| {
            let target = plan.cpu_utilization?;
            Some(autoscaler(owner, plan.version, target))
        })
        .collect();
    let gateway = spec.router.as_ref().and_then(|r| r.gateway.as_ref());
    let version_services = match gateway {
        Some(_) => versions
            .iter()
            .map(|plan| version_service(owner, &plan.version.name))
            .collect(),
        None => Vec::new(),
    };
    Children {
        deployments,
        autoscalers,
        service: Some(service(owner)),
        version_services,
        route: gateway.map(|g| http_route(owner, spec, g, weights)),
    }
}

/// A Service in front of one version's servers: a backend of the route.
fn version_service(owner: &Owner, version: &str) -> Service {
    let selector = server_selector(owner, version);
    Service {
        metadata: metadata(owner, server_name(&owner.name, version), &selector),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The `HTTPRoute` `NAME`: one rule whose backends are the versions' Services with their
/// weights, and a `RequestMirror` filter for the shadow's share.
fn http_route(
    owner: &Owner,
    spec: &EndpointSpec,
    gateway: &GatewaySpec,
    weights: &BTreeMap<String, u32>,
) -> serde_json::Value {
    let backends: Vec<serde_json::Value> = spec
        .versions
        .iter()
        .map(|v| {
            json!({
                "name": server_name(&owner.name, &v.name),
                "port": SERVICE_PORT,
                "weight": weights.get(&v.name).copied().unwrap_or(0),
            })
        })
        .collect();
    let mut rule = json!({ "backendRefs": backends });
    if let Some(shadow) = spec.shadow.as_ref().filter(|s| s.percent > 0) {
        rule["filters"] = json!([{
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": {
                    "name": server_name(&owner.name, &shadow.version),
                    "port": SERVICE_PORT,
                },
                "percent": shadow.percent,
            },
        }]);
    }
    let parents: Vec<serde_json::Value> = gateway
        .parent_refs
        .iter()
        .map(|p| {
            let mut parent = json!({ "name": p.name });
            if let Some(ns) = &p.namespace {
                parent["namespace"] = json!(ns);
            }
            if let Some(section) = &p.section_name {
                parent["sectionName"] = json!(section);
            }
            parent
        })
        .collect();
    let mut route_spec = json!({ "parentRefs": parents, "rules": [rule] });
    if !gateway.hostnames.is_empty() {
        route_spec["hostnames"] = json!(gateway.hostnames);
    }
    let labels = router_selector(owner);
    json!({
        "apiVersion": format!("{ROUTE_GROUP}/{ROUTE_VERSION}"),
        "kind": ROUTE_KIND,
        "metadata": metadata(owner, service_name(&owner.name), &labels),
        "spec": route_spec,
    })
}

/// The labels that select one version's pods.
fn server_selector(owner: &Owner, version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ENDPOINT_LABEL.to_string(), dns_label(&owner.name)),
        (VERSION_LABEL.to_string(), version.to_string()),
        (COMPONENT_LABEL.to_string(), SERVER_COMPONENT.to_string()),
    ])
}

/// The labels that select the router's pods (and that the Service selects).
fn router_selector(owner: &Owner) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ENDPOINT_LABEL.to_string(), dns_label(&owner.name)),
        (COMPONENT_LABEL.to_string(), ROUTER_COMPONENT.to_string()),
    ])
}

fn metadata(owner: &Owner, name: String, labels: &BTreeMap<String, String>) -> ObjectMeta {
    let mut labels = labels.clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    ObjectMeta {
        name: Some(name),
        namespace: Some(owner.namespace.clone()),
        labels: Some(labels),
        owner_references: Some(vec![owner.reference.clone()]),
        ..ObjectMeta::default()
    }
}

/// A pod template's metadata: the selector's labels, the endpoint's UID (so that a new
/// Endpoint of the same name never counts an old one's pods) and its exact name.
fn template_metadata(owner: &Owner, selector: &BTreeMap<String, String>) -> ObjectMeta {
    let mut labels = selector.clone();
    labels.insert(ENDPOINT_UID_LABEL.into(), owner.uid.clone());
    ObjectMeta {
        labels: Some(labels),
        annotations: Some(BTreeMap::from([(
            ENDPOINT_ANNOTATION.to_string(),
            owner.name.clone(),
        )])),
        ..ObjectMeta::default()
    }
}

fn server_deployment(
    owner: &Owner,
    defaults: &ServingDefaults,
    spec: &EndpointSpec,
    plan: &VersionPlan<'_>,
) -> Deployment {
    let version = &plan.version.name;
    let selector = server_selector(owner, version);
    let mut args = vec![
        "serve".to_string(),
        "--model".into(),
        plan.digest.clone(),
        "--artifacts".into(),
        defaults.artifacts.clone(),
        "--model-cache".into(),
        MODEL_CACHE.into(),
        "--name".into(),
        owner.name.clone(),
        "--version".into(),
        version.clone(),
        "--listen".into(),
        format!("$(POD_IP):{SERVING_PORT}"),
    ];
    args.extend(
        spec.server_flags(
            defaults
                .api_url
                .as_deref()
                .map(|api| (api, Some(TOKEN_PATH))),
        ),
    );
    let container = Container {
        name: "server".into(),
        image: Some(defaults.serving_image.clone()),
        command: Some(vec!["toucan-worker".into()]),
        args: Some(args),
        env: Some(vec![
            pod_ip_env(),
            env("HOME", format!("{WORK_DIR}/home")),
            env("TMPDIR", format!("{WORK_DIR}/tmp")),
        ]),
        env_from: defaults.artifacts_secret.as_ref().map(|name| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: name.clone(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            }]
        }),
        ports: Some(vec![http_port()]),
        // Ready once the model is loaded; the router probes the same path itself.
        readiness_probe: Some(http_probe("/v2/health/ready")),
        resources: resources(plan.version.resources.as_ref()),
        volume_mounts: Some(vec![mount("models", MODEL_CACHE), mount("work", WORK_DIR)]),
        security_context: Some(restricted()),
        ..Container::default()
    };
    Deployment {
        metadata: metadata(owner, server_name(&owner.name, version), &selector),
        spec: Some(DeploymentSpec {
            replicas: plan.replicas.map(|r| i32::try_from(r).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(template_metadata(owner, &selector)),
                spec: Some(pod_spec(
                    container,
                    Some(defaults.service_account.clone()),
                    vec![empty_dir("models"), empty_dir("work")],
                )),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The router's Deployment; `None` without the API's URL, where it would read its
/// configuration.
fn router_deployment(owner: &Owner, defaults: &ServingDefaults) -> Option<Deployment> {
    let api = defaults.api_url.as_ref()?;
    let selector = router_selector(owner);
    let container = Container {
        name: "router".into(),
        image: Some(defaults.router_image.clone()),
        command: Some(vec!["toucan-router".into()]),
        args: Some(vec![
            "--config-url".into(),
            router_config_url(api, &owner.namespace, &owner.name),
            "--config-token-file".into(),
            TOKEN_PATH.into(),
            "--listen".into(),
            format!("$(POD_IP):{SERVING_PORT}"),
        ]),
        env: Some(vec![pod_ip_env()]),
        ports: Some(vec![http_port()]),
        // Ready once some version has weight and a ready replica.
        readiness_probe: Some(http_probe("/readyz")),
        security_context: Some(restricted()),
        ..Container::default()
    };
    Some(Deployment {
        metadata: metadata(owner, router_name(&owner.name), &selector),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(template_metadata(owner, &selector)),
                // Its token is how the API knows it for this endpoint's router.
                spec: Some(pod_spec(
                    container,
                    Some(defaults.service_account.clone()),
                    Vec::new(),
                )),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

fn service(owner: &Owner) -> Service {
    let selector = router_selector(owner);
    Service {
        metadata: metadata(owner, service_name(&owner.name), &selector),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn autoscaler(owner: &Owner, version: &ModelVersion, cpu: u32) -> HorizontalPodAutoscaler {
    let (min, max) = version.replica_bounds();
    let name = server_name(&owner.name, &version.name);
    HorizontalPodAutoscaler {
        metadata: metadata(owner, name.clone(), &server_selector(owner, &version.name)),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name,
            },
            min_replicas: Some(i32::try_from(min).unwrap_or(i32::MAX)),
            max_replicas: i32::try_from(max.max(min)).unwrap_or(i32::MAX),
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(i32::try_from(cpu).unwrap_or(100)),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        status: None,
    }
}

fn pod_spec(
    container: Container,
    service_account: Option<String>,
    volumes: Vec<Volume>,
) -> PodSpec {
    PodSpec {
        automount_service_account_token: Some(service_account.is_some()),
        service_account_name: service_account,
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(SERVING_UID),
            run_as_group: Some(SERVING_UID),
            fs_group: Some(SERVING_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        volumes: (!volumes.is_empty()).then_some(volumes),
        ..PodSpec::default()
    }
}

fn http_port() -> ContainerPort {
    ContainerPort {
        name: Some(PORT_NAME.into()),
        container_port: SERVING_PORT,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn http_probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(2),
        failure_threshold: Some(2),
        ..Probe::default()
    }
}

fn pod_ip_env() -> EnvVar {
    EnvVar {
        name: "POD_IP".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "status.podIP".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..EnvVar::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use toucan_core::api::Endpoint;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn endpoint(yaml: &str) -> Endpoint {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn owner() -> Owner {
        Owner {
            namespace: "models".into(),
            name: "fashion".into(),
            uid: "uid-1".into(),
            reference: OwnerReference {
                api_version: "toucan.dev/v1alpha1".into(),
                kind: "Endpoint".into(),
                name: "fashion".into(),
                uid: "uid-1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        }
    }

    fn defaults(api: Option<&str>) -> ServingDefaults {
        ServingDefaults {
            serving_image: "toucan/worker:cpu".into(),
            router_image: "toucan/operator:0.1.0".into(),
            service_account: "toucan-step".into(),
            api_url: api.map(Into::into),
            artifacts: "s3://bucket/toucan".into(),
            artifacts_secret: Some("toucan-artifacts".into()),
        }
    }

    const FIXTURE: &str = r#"
apiVersion: toucan.dev/v1alpha1
kind: Endpoint
metadata: {name: fashion, namespace: models}
spec:
  versions:
    - name: v1
      model: {digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
      replicas: {min: 2, max: 4}
      resources: {cpu: "1", memory: 1Gi}
    - name: v2
      model: {run: daily, step: export, artifact: bundle}
  traffic: [{version: v1, weight: 90}, {version: v2, weight: 10}]
  batching: {maxBatchSize: 8, maxDelay: 10ms}
  sampling: {rate: 0.25, inputs: true, attributes: [x-tenant, x-region]}
"#;

    #[test]
    fn a_gateway_gets_a_route_over_the_versions_services_with_the_weights_in_force() {
        let mut ep = endpoint(FIXTURE);
        let plain = children(&owner(), &defaults(None), &ep.spec, &[], &BTreeMap::new());
        assert!(plain.route.is_none() && plain.version_services.is_empty());
        ep.spec.shadow = Some(toucan_core::api::ShadowSpec {
            version: "v2".into(),
            percent: 30,
        });
        ep.spec.router = Some(toucan_core::api::RouterSpec {
            gateway: Some(GatewaySpec {
                parent_refs: vec![toucan_core::api::GatewayParentRef {
                    name: "public".into(),
                    namespace: Some("gateways".into()),
                    section_name: None,
                }],
                hostnames: vec!["models.example.com".into()],
            }),
            ..Default::default()
        });
        let plans: Vec<VersionPlan> = ep
            .spec
            .versions
            .iter()
            .map(|v| VersionPlan {
                version: v,
                digest: DIGEST.into(),
                replicas: Some(1),
                cpu_utilization: None,
            })
            .collect();
        let weights = BTreeMap::from([("v1".to_string(), 0), ("v2".to_string(), 100)]);
        let c = children(&owner(), &defaults(None), &ep.spec, &plans, &weights);
        let services: Vec<_> = c
            .version_services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(services, ["fashion-v1", "fashion-v2"]);
        let selector = c.version_services[1]
            .spec
            .as_ref()
            .unwrap()
            .selector
            .clone();
        assert_eq!(
            selector.unwrap().get(VERSION_LABEL).map(String::as_str),
            Some("v2")
        );
        let route = c.route.unwrap();
        assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(route["kind"], "HTTPRoute");
        assert_eq!(route["metadata"]["name"], "fashion");
        assert_eq!(route["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(
            route["spec"]["parentRefs"],
            json!([{"name": "public", "namespace": "gateways"}])
        );
        assert_eq!(route["spec"]["hostnames"], json!(["models.example.com"]));
        assert_eq!(
            route["spec"]["rules"][0]["backendRefs"],
            json!([
                {"name": "fashion-v1", "port": 80, "weight": 0},
                {"name": "fashion-v2", "port": 80, "weight": 100},
            ])
        );
        assert_eq!(
            route["spec"]["rules"][0]["filters"],
            json!([{"type": "RequestMirror", "requestMirror": {
                "backendRef": {"name": "fashion-v2", "port": 80}, "percent": 30}}])
        );
    }

    fn server_args(d: &Deployment) -> Vec<String> {
        let c = &d
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0];
        c.args.clone().unwrap()
    }

    #[test]
    fn each_version_is_a_deployment_of_the_model_server_and_the_router_fronts_them() {
        let ep = endpoint(FIXTURE);
        let plans = [
            VersionPlan {
                version: &ep.spec.versions[0],
                digest: DIGEST.into(),
                replicas: Some(3),
                cpu_utilization: None,
            },
            VersionPlan {
                version: &ep.spec.versions[1],
                digest: DIGEST.replace('0', "f"),
                replicas: Some(1),
                cpu_utilization: None,
            },
        ];
        let c = children(
            &owner(),
            &defaults(Some("http://api:8080/")),
            &ep.spec,
            &plans,
            &BTreeMap::new(),
        );
        let names: Vec<_> = c
            .deployments
            .iter()
            .map(|d| d.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["fashion-v1", "fashion-v2", "fashion-router"]);
        assert!(c.autoscalers.is_empty());

        let v1 = &c.deployments[0];
        assert_eq!(v1.spec.as_ref().unwrap().replicas, Some(3));
        let owners = v1.metadata.owner_references.as_ref().unwrap();
        assert_eq!(owners[0].uid, "uid-1");
        assert_eq!(owners[0].controller, Some(true));
        let template = &v1.spec.as_ref().unwrap().template;
        let labels = template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(labels[ENDPOINT_LABEL], "fashion");
        assert_eq!(labels[VERSION_LABEL], "v1");
        assert_eq!(labels[ENDPOINT_UID_LABEL], "uid-1");
        let selector = v1
            .spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .as_ref()
            .unwrap();
        assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
        assert_eq!(
            server_args(v1),
            [
                "serve",
                "--model",
                DIGEST,
                "--artifacts",
                "s3://bucket/toucan",
                "--model-cache",
                "/toucan/models",
                "--name",
                "fashion",
                "--version",
                "v1",
                "--listen",
                "$(POD_IP):8080",
                "--max-batch-size",
                "8",
                "--max-delay-ms",
                "10",
                "--sample-rate",
                "0.25",
                "--sample-sink",
                "http://api:8080/",
                "--sample-token-file",
                TOKEN_PATH,
                "--sample-inputs",
                "--sample-attributes",
                "x-tenant,x-region",
            ]
        );
        let pod = template.spec.as_ref().unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("toucan-step"));
        let server = &pod.containers[0];
        let probe = server
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/v2/health/ready"));
        let resources = server.resources.as_ref().unwrap();
        assert_eq!(resources.requests.as_ref().unwrap()["cpu"].0, "1");
        assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "1Gi");
        assert_eq!(
            server.env_from.as_ref().unwrap()[0]
                .secret_ref
                .as_ref()
                .unwrap()
                .name,
            "toucan-artifacts"
        );

        let router = &c.deployments[2];
        let args = server_args(router);
        assert_eq!(
            args,
            [
                "--config-url",
                "http://api:8080/api/v1/namespaces/models/endpoints/fashion/router-config",
                "--config-token-file",
                TOKEN_PATH,
                "--listen",
                "$(POD_IP):8080",
            ]
        );
        // The router presents its pod's token: the API knows it by it.
        let router_pod = router
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        assert_eq!(router_pod.automount_service_account_token, Some(true));
        let service = c.service.unwrap();
        assert_eq!(service.metadata.name.as_deref(), Some("fashion"));
        let spec = service.spec.unwrap();
        let router_labels = router
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        let selected = spec.selector.unwrap();
        assert!(
            selected
                .iter()
                .all(|(k, v)| router_labels.get(k) == Some(v))
        );
        assert!(
            !selected.contains_key(VERSION_LABEL),
            "the service selects no server"
        );
        assert_eq!(spec.ports.unwrap()[0].port, 80);
    }

    #[test]
    fn without_the_api_url_there_is_no_router_and_no_sampling() {
        let ep = endpoint(FIXTURE);
        let plans = [VersionPlan {
            version: &ep.spec.versions[0],
            digest: DIGEST.into(),
            replicas: Some(2),
            cpu_utilization: None,
        }];
        let c = children(
            &owner(),
            &defaults(None),
            &ep.spec,
            &plans,
            &BTreeMap::new(),
        );
        assert_eq!(c.deployments.len(), 1);
        assert!(!server_args(&c.deployments[0]).contains(&"--sample-rate".to_string()));
    }

    #[test]
    fn cpu_autoscaling_leaves_replicas_to_a_horizontal_pod_autoscaler() {
        let ep = endpoint(FIXTURE);
        let plans = [VersionPlan {
            version: &ep.spec.versions[0],
            digest: DIGEST.into(),
            replicas: None,
            cpu_utilization: Some(70),
        }];
        let c = children(
            &owner(),
            &defaults(Some("http://api")),
            &ep.spec,
            &plans,
            &BTreeMap::new(),
        );
        assert_eq!(c.deployments[0].spec.as_ref().unwrap().replicas, None);
        let hpa = c.autoscalers[0].spec.as_ref().unwrap();
        assert_eq!(hpa.scale_target_ref.name, "fashion-v1");
        assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 4));
        let target = &hpa.metrics.as_ref().unwrap()[0]
            .resource
            .as_ref()
            .unwrap()
            .target;
        assert_eq!(target.average_utilization, Some(70));
        // Applied as is: apiVersion and kind are in the serialized object.
        let json = serde_json::to_value(&c.autoscalers[0]).unwrap();
        assert_eq!(json["apiVersion"], "autoscaling/v2");
        assert_eq!(json["kind"], "HorizontalPodAutoscaler");
    }
}
