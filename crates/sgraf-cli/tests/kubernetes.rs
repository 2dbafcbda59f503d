//! examples/kubernetes/index-job.yaml: the Job parses, its fields agree
//! (Indexed, completions == parallelism == the shard count the pods use,
//! per-index retries), and its pod script, run here as Kubernetes would run
//! each index (one failing once and retried), leaves one joined index.
#![cfg(unix)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixtures, scratch};
use serde_yaml_ng::Value;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubernetes/index-job.yaml")
}

/// The Job that indexes: the example's one YAML document (the pod that
/// completes the last shard joins, so there is no second Job).
fn job() -> Value {
    let text = std::fs::read_to_string(example()).unwrap();
    let job: Value =
        serde_yaml_ng::from_str(&text).expect("the example is one valid YAML document");
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["apiVersion"], "batch/v1");
    job
}

fn container(job: &Value) -> &Value {
    let containers = job["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

/// The container's environment: (name, value) of the plain ones.
fn env(c: &Value) -> Vec<(String, String)> {
    c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

fn env_value(c: &Value, name: &str) -> String {
    env(c)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in the container's env"))
        .1
}

/// The pod's shell script (`command: [/bin/sh, -c]`, `args: [SCRIPT]`).
fn script(c: &Value) -> String {
    let command: Vec<&str> = c["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(command, ["/bin/sh", "-c"]);
    let args = c["args"].as_sequence().unwrap();
    assert_eq!(args.len(), 1);
    args[0].as_str().unwrap().to_string()
}

#[test]
fn the_job_fields_agree() {
    let job = job();
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let completions = spec["completions"].as_u64().expect("completions");
    assert_eq!(spec["parallelism"].as_u64(), Some(completions));
    let c = container(&job);
    let shards: u64 = env_value(c, "SHARDS").parse().expect("SHARDS is a number");
    assert_eq!(shards, completions, "SHARDS must equal completions");
    // A failed index is retried on its own (backoffLimitPerIndex, which needs
    // restartPolicy Never); a Job-wide backoffLimit would count every index's
    // failures together.
    assert!(spec["backoffLimitPerIndex"].as_u64().unwrap_or(0) >= 1);
    assert!(spec["backoffLimit"].is_null());
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    // The markers are per Job: its uid, from the label Kubernetes sets.
    let uid = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "JOB_UID")
        .expect("JOB_UID in env");
    assert_eq!(
        uid["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.labels['batch.kubernetes.io/controller-uid']"
    );
    // The shard each pod indexes, then the join, in that order.
    let s = script(c);
    let shard = s
        .find(r#"--shard "$JOB_COMPLETION_INDEX/$SHARDS""#)
        .expect("the pod indexes shard JOB_COMPLETION_INDEX of SHARDS");
    let join = s[shard..]
        .find(r#"sgraf-cli index "$@" --images "$PHOTOS""#)
        .expect("a join (index without --shard) follows the shard");
    assert!(!s[shard + join..]
        .lines()
        .next()
        .unwrap()
        .contains("--shard"));
    // Every mounted path the pod uses is on the volume.
    let mount = c["volumeMounts"][0]["mountPath"].as_str().unwrap();
    for name in ["PHOTOS", "DETECTOR"] {
        assert!(env_value(c, name).starts_with(mount), "{name}");
    }
    for m in env_value(c, "MODELS").split_whitespace() {
        assert!(m.starts_with(mount), "{m}");
    }
}

/// A folder of the fixture's ten feature files, its path with a space.
fn feature_folder(root: &Path) -> PathBuf {
    let dir = root.join("photo folder");
    std::fs::create_dir_all(&dir).unwrap();
    let a = sgraf::data::Npy::open(fixtures().join("precomp/test_ims.npy")).unwrap();
    let (shape, data) = (a.shape().to_vec(), a.to_vec().unwrap());
    let per = shape[1] * shape[2];
    for i in 0..shape[0] {
        let path = dir.join(format!("img{i}.npy"));
        sgraf::data::npy::write_f32(&path, &shape[1..], &data[i * per..(i + 1) * per]).unwrap();
    }
    dir
}

/// Runs the pod script for one index, with `bin` first on the PATH.
fn pod(script: &str, bin: &Path, index: usize, env: &[(&str, String)]) -> (bool, String) {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("/bin/sh")
        .args(["-c", script])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("JOB_COMPLETION_INDEX", index.to_string())
        .env("PATH", path)
        .env_remove("SGRAF_MODEL")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn manifests(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(".sgraf-index"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("manifest"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn the_pods_join_after_a_retried_index() {
    let job = job();
    let c = container(&job);
    let s = script(c);
    let root = scratch("k8s");
    let photos = feature_folder(&root);
    // sgraf-cli as the image has it, and one that fails (a crashed pod).
    let good = root.join("bin good");
    let bad = root.join("bin bad");
    for d in [&good, &bad] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sgraf-cli"), good.join("sgraf-cli")).unwrap();
    std::fs::write(
        bad.join("sgraf-cli"),
        "#!/bin/sh\necho injected failure >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(bad.join("sgraf-cli"), PermissionsExt::from_mode(0o755)).unwrap();
    let models = format!(
        "{} {}",
        fixtures().join("sgr").display(),
        fixtures().join("saf").display()
    );
    // Three shards (the example's 16 would only be slower), no detector.
    let env = [
        ("SHARDS", "3".to_string()),
        ("PHOTOS", photos.display().to_string()),
        ("MODELS", models),
        ("DETECTOR", String::new()),
        ("JOB_UID", "0a1b2c3d-test".to_string()),
    ];
    let (ok0, out0) = pod(&s, &good, 0, &env);
    assert!(ok0, "{out0}");
    let (ok2, out2) = pod(&s, &bad, 2, &env);
    assert!(!ok2 && out2.contains("injected failure"), "{out2}");
    let (ok1, out1) = pod(&s, &good, 1, &env);
    assert!(ok1 && !out1.contains("joining"), "{out1}");
    assert_eq!(
        manifests(&photos),
        ["manifest-shard-0-of-3.json", "manifest-shard-1-of-3.json"],
        "no join while index 2 is missing"
    );
    // Kubernetes retries index 2 (backoffLimitPerIndex): it completes the
    // last shard and joins, re-encoding nothing.
    let (ok2, out2) = pod(&s, &good, 2, &env);
    assert!(ok2, "{out2}");
    assert!(out2.contains("joining"), "{out2}");
    assert!(
        out2.contains("0 new, 0 changed, 0 removed, 10 unchanged"),
        "{out2}"
    );
    assert_eq!(manifests(&photos), ["manifest.json"]);
    assert!(!photos.join(".sgraf-k8s/0a1b2c3d-test").exists());
    std::fs::remove_dir_all(&root).unwrap();
}
