//! Names a person recognises for a cgroup: the container, pod or systemd
//! unit it belongs to. Runtimes encode their ids in the cgroup path, so this
//! is path parsing only; nothing here asks a runtime.
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    pub runtime: Runtime,
    /// The full container id.
    pub id: Option<String>,
    /// With dashes, as `kubectl get pod -o yaml` shows it.
    pub pod_uid: Option<String>,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Podman,
    Containerd,
    Kubernetes,
    Systemd,
    Cgroup,
}

/// What a cgroup v2 path (relative to the mount, `/a/b`) belongs to. `None`
/// for the root.
///
/// The path is walked from the leaf up and the innermost container wins, so
/// a systemd unit running inside a container (`docker-X.scope/init.scope`)
/// is the container's, and docker-in-docker names the inner one.
pub fn identify(cgroup_path: &str) -> Option<Container> {
    let parts: Vec<&str> = cgroup_path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return None;
    }
    let found = (0..parts.len())
        .rev()
        .find_map(|i| container_at(&parts, i))
        .or_else(|| systemd_unit(&parts))
        .unwrap_or_else(|| plain(Runtime::Cgroup, cgroup_path.to_string()));
    Some(found)
}

/// The container or pod whose cgroup is `parts[i]`, if it is one.
fn container_at(parts: &[&str], i: usize) -> Option<Container> {
    let part = parts[i];
    let above = &parts[..i];
    // Checked before the ids: the pod's own cgroup (sandbox, or a process
    // placed directly in it) is reached only when no container sits below.
    if let Some(uid) = pod_uid(part, above) {
        return Some(Container {
            runtime: Runtime::Kubernetes,
            id: None,
            name: format!("k8s:pod-{uid}"),
            pod_uid: Some(uid),
        });
    }
    let in_k8s = above.iter().any(|p| p.contains("kubepods"));
    if let Some(id) = scope_id(part, "libpod-conmon-") {
        return Some(runtime_container(Runtime::Podman, "podman-conmon", id));
    }
    if let Some(id) = scope_id(part, "libpod-") {
        return Some(runtime_container(Runtime::Podman, "podman", id));
    }
    if let Some(id) = scope_id(part, "docker-") {
        return Some(if in_k8s {
            k8s_container(id, above)
        } else {
            runtime_container(Runtime::Docker, "docker", id)
        });
    }
    if let Some(id) = scope_id(part, "cri-containerd-") {
        return Some(if in_k8s {
            k8s_container(id, above)
        } else {
            runtime_container(Runtime::Containerd, "containerd", id)
        });
    }
    if let Some(id) = scope_id(part, "crio-") {
        return Some(k8s_container(id, above));
    }
    // cgroupfs drivers name the directory by the bare id; the parent says
    // whose it is.
    if !is_container_id(part) {
        return None;
    }
    let parent = *above.last()?;
    if parent == "docker" {
        return Some(runtime_container(Runtime::Docker, "docker", part));
    }
    if pod_uid(parent, &above[..above.len() - 1]).is_some() {
        return Some(k8s_container(part, above));
    }
    // containerd's own layout is `/<namespace>/<id>`. The namespace can be
    // any name, so only a full-length id at that depth is taken as one:
    // `/mygroup/abcdef123456` is more likely somebody's own cgroup.
    (i == 1 && part.len() == 64).then(|| runtime_container(Runtime::Containerd, "containerd", part))
}

/// `<prefix><id>.scope`, the systemd cgroup driver's naming.
fn scope_id<'a>(part: &'a str, prefix: &str) -> Option<&'a str> {
    let id = part.strip_prefix(prefix)?.strip_suffix(".scope")?;
    is_container_id(id).then_some(id)
}

fn is_container_id(s: &str) -> bool {
    s.len() >= 12 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The pod uid if `part` is a pod's cgroup: `kubepods[-qos]-pod<uid>.slice`
/// (systemd driver, `_` for `-`) or `pod<uid>` under `kubepods` (cgroupfs).
fn pod_uid(part: &str, above: &[&str]) -> Option<String> {
    let raw = match part.strip_suffix(".slice") {
        Some(unit) => {
            let (prefix, uid) = unit.rsplit_once("-pod")?;
            if !prefix.contains("kubepods") {
                return None;
            }
            uid
        }
        None => {
            if !above.iter().any(|p| p.contains("kubepods")) {
                return None;
            }
            part.strip_prefix("pod")?
        }
    };
    let uid = raw.replace('_', "-");
    // Regular pods have UUIDs; static pods a 32-hex hash without dashes.
    let valid = uid.len() >= 32
        && uid
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-'));
    valid.then_some(uid)
}

fn runtime_container(runtime: Runtime, label: &str, id: &str) -> Container {
    Container {
        runtime,
        id: Some(id.to_string()),
        pod_uid: None,
        name: format!("{label}:{}", short(id, 12)),
    }
}

fn k8s_container(id: &str, above: &[&str]) -> Container {
    let pod = (0..above.len())
        .rev()
        .find_map(|j| pod_uid(above[j], &above[..j]));
    let name = match &pod {
        Some(uid) => format!("k8s:pod-{}/{}", short(uid, 8), short(id, 12)),
        None => format!("k8s:{}", short(id, 12)),
    };
    Container {
        runtime: Runtime::Kubernetes,
        id: Some(id.to_string()),
        pod_uid: pod,
        name,
    }
}

/// The leaf-most `.service` or `.scope`; services of a user's systemd
/// (under `user@UID.service`) say whose they are, since every user runs
/// the same few.
fn systemd_unit(parts: &[&str]) -> Option<Container> {
    let j = parts
        .iter()
        .rposition(|p| p.ends_with(".service") || p.ends_with(".scope"))?;
    let unit = parts[j];
    let user = parts[..j].iter().find_map(|p| {
        p.strip_prefix("user@")?
            .strip_suffix(".service")
            .filter(|uid| uid.parse::<u32>().is_ok())
    });
    let name = match user {
        Some(uid) => format!("{unit} (user {uid})"),
        None => unit.to_string(),
    };
    Some(plain(Runtime::Systemd, name))
}

fn plain(runtime: Runtime, name: String) -> Container {
    Container {
        runtime,
        id: None,
        pod_uid: None,
        name,
    }
}

/// The first `n` bytes; ids and uids are ASCII. Shorter ones stay whole.
fn short(s: &str, n: usize) -> &str {
    s.get(..n).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";
    const ID2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "5e8d7a3c-1b2f-4c6d-9e0a-7f8b9c0d1e2f";
    const UID_: &str = "5e8d7a3c_1b2f_4c6d_9e0a_7f8b9c0d1e2f";

    /// Every path in `paths` identifies as the same thing.
    fn all_are(
        paths: &[String],
        runtime: Runtime,
        id: Option<&str>,
        pod: Option<&str>,
        name: &str,
    ) {
        let want = Container {
            runtime,
            id: id.map(str::to_string),
            pod_uid: pod.map(str::to_string),
            name: name.to_string(),
        };
        for path in paths {
            assert_eq!(identify(path).as_ref(), Some(&want), "{path}");
        }
    }

    fn unit(path: &str, name: &str) {
        all_are(&[path.to_string()], Runtime::Systemd, None, None, name);
    }

    #[test]
    fn root_is_nothing() {
        assert_eq!(identify("/"), None);
        assert_eq!(identify(""), None);
    }

    #[test]
    fn docker() {
        let paths = [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            // A systemd running inside the container.
            format!("/system.slice/docker-{ID}.scope/init.scope"),
            format!("/docker/{ID}/system.slice/nginx.service"),
            // Docker-in-docker: the inner container.
            format!("/docker/{ID2}/docker/{ID}"),
        ];
        all_are(
            &paths,
            Runtime::Docker,
            Some(ID),
            None,
            "docker:3f4e1c2b9a8d",
        );
        // A short id is still an id.
        let short = "abcdef012345";
        let paths = [format!("/docker/{short}")];
        all_are(
            &paths,
            Runtime::Docker,
            Some(short),
            None,
            "docker:abcdef012345",
        );
    }

    #[test]
    fn podman() {
        let paths = [
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
            format!("/machine.slice/machine-libpod_pod_{ID2}.slice/libpod-{ID}.scope/container"),
        ];
        all_are(
            &paths,
            Runtime::Podman,
            Some(ID),
            None,
            "podman:3f4e1c2b9a8d",
        );
        let conmon = [format!("/machine.slice/libpod-conmon-{ID}.scope")];
        all_are(
            &conmon,
            Runtime::Podman,
            Some(ID),
            None,
            "podman-conmon:3f4e1c2b9a8d",
        );
    }

    #[test]
    fn containerd() {
        let paths = [
            format!("/default/{ID}"),
            format!("/system.slice/cri-containerd-{ID}.scope"),
        ];
        all_are(
            &paths,
            Runtime::Containerd,
            Some(ID),
            None,
            "containerd:3f4e1c2b9a8d",
        );
    }

    #[test]
    fn kubernetes_systemd_driver() {
        let pods = [
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"),
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"
            ),
            format!("/kubepods.slice/kubepods-pod{UID_}.slice"),
            // A kind node: kubelet inside a docker container, with its own root.
            format!(
                "/system.slice/docker-{ID2}.scope/kubelet.slice/kubelet-kubepods.slice/\
                 kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice"
            ),
        ];
        let containers: Vec<String> = pods
            .iter()
            .flat_map(|pod| {
                ["cri-containerd", "docker", "crio"].map(|rt| format!("{pod}/{rt}-{ID}.scope"))
            })
            .collect();
        let name = "k8s:pod-5e8d7a3c/3f4e1c2b9a8d";
        all_are(&containers, Runtime::Kubernetes, Some(ID), Some(UID), name);
        // The sandbox, or anything else in the pod but in no container.
        let mut in_pod = pods.to_vec();
        in_pod.push(format!("{}/crio-conmon-{ID}.scope", pods[0]));
        all_are(
            &in_pod,
            Runtime::Kubernetes,
            None,
            Some(UID),
            &format!("k8s:pod-{UID}"),
        );
    }

    #[test]
    fn kubernetes_cgroupfs_driver() {
        let pods = [
            format!("/kubepods/burstable/pod{UID}"),
            format!("/kubepods/besteffort/pod{UID}"),
            format!("/kubepods/pod{UID}"),
        ];
        let containers: Vec<String> = pods.iter().map(|pod| format!("{pod}/{ID}")).collect();
        let name = "k8s:pod-5e8d7a3c/3f4e1c2b9a8d";
        all_are(&containers, Runtime::Kubernetes, Some(ID), Some(UID), name);
        all_are(
            &pods,
            Runtime::Kubernetes,
            None,
            Some(UID),
            &format!("k8s:pod-{UID}"),
        );
        // A static pod's uid is a hash without dashes.
        let hash = "9c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f";
        let paths = [format!("/kubepods/burstable/pod{hash}/{ID}")];
        let name = "k8s:pod-9c3b2a1f/3f4e1c2b9a8d";
        all_are(&paths, Runtime::Kubernetes, Some(ID), Some(hash), name);
    }

    #[test]
    fn systemd_units() {
        unit("/system.slice/nginx.service", "nginx.service");
        unit(
            "/user.slice/user-1000.slice/session-3.scope",
            "session-3.scope",
        );
        unit(
            "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
            "foo.service (user 1000)",
        );
        unit(
            "/user.slice/user-1000.slice/user@1000.service",
            "user@1000.service",
        );
        // A service that delegates sub-cgroups to its workers.
        unit("/system.slice/build.service/worker-3", "build.service");
        // A scope without an id is a scope, not a container.
        unit("/system.slice/docker-.scope", "docker-.scope");
        unit(
            "/system.slice/docker-NOTHEX12345678.scope",
            "docker-NOTHEX12345678.scope",
        );
    }

    #[test]
    fn plain_cgroups() {
        for path in [
            "/system.slice",
            "/user.slice/user-1000.slice",
            "/kubepods.slice/kubepods-burstable.slice",
            "/sentinel-test-abc",
            "/mygroup/sub",
            "/docker/notanid",
            "/docker",
            // Too short to be an id.
            "/docker/abc123",
            // Only a full id right under the root is containerd's.
            "/mygroup/abcdef0123456789",
            // No kubepods above.
            "/pod5e8d7a3c-1b2f-4c6d-9e0a-7f8b9c0d1e2f",
        ] {
            all_are(&[path.to_string()], Runtime::Cgroup, None, None, path);
        }
    }

    #[test]
    fn serializes_runtime_lowercase() {
        let c = identify(&format!("/docker/{ID}"));
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["runtime"], "docker");
        assert_eq!(v["name"], "docker:3f4e1c2b9a8d");
    }
}
