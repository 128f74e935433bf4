#!/usr/bin/env python3
"""Checks the deployment files under infra/ against Kubernetes, each other and
the `osprey` binary they run.

Usage: check_infra.py [OSPREY_BINARY]      (default: $OSPREY_BIN)

  1. Every manifest in infra/k8s is validated against the Kubernetes OpenAPI
     schemas (kubernetes-validate, strict: unknown fields fail), and the
     kustomization lists exactly those files.
  2. Cross-references: Secret/ConfigMap references name an object and a key
     that exist, volumes and mounts match, Services select the coordinator's
     pods and reach its port, probes hit /healthz on the container port,
     workers reach the coordinator's Service with an operator key, the HPA
     targets a Deployment, the GPU workers ask for nvidia.com/gpu, and
     Secret values are placeholders.
  3. The Dockerfiles in infra/docker (dockerfile-parse): COPY/ADD sources
     exist in the build context (the repository root) and are not
     .dockerignored, the final stage runs `osprey` as a non-root user, the
     CPU image stays portable (no AVX-512), the CUDA image builds with
     `--features cuda`, and the CPU runtime stage installs the packages of
     every shared library the binary links.
  4. Every osprey subcommand and --flag the manifests and the Dockerfiles'
     CMDs use exists (`osprey <subcommand> --help`), and required options
     are given.
  5. Smoke run: a coordinator started with the manifest's arguments, the
     ConfigMap's osprey.toml and the Secret's keys (over a local root)
     answers the probe path, serves /metrics to the workers' key with every
     metric the manifests name, and a worker with the manifest's arguments
     and key leases from it and stops cleanly on SIGTERM.

Prints what it checked; exits 1 listing every problem found.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

try:
    import kubernetes_validate
    import yaml
    from dockerfile_parse import DockerfileParser
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(
        f"check_infra: {e}: install infra/requirements-test.txt into the test venv "
        "(infra/scripts/setup.sh) and run this with $OSPREY_PYTHON"
    )

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
DOCKER = REPO / "infra" / "docker"
# The Kubernetes version the manifests are validated against.
K8S_VERSION = "1.30.0"
CPU_IMAGE = "ghcr.io/osprey/osprey"
GPU_IMAGE = "ghcr.io/osprey/osprey-cuda"
HEALTH_PATH = "/healthz"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}
# Shared libraries every Debian/Ubuntu base image already has.
BASE_LIBS = {
    "libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1",
    "ld-linux-x86-64.so.2", "libgcc_s.so.1", "libstdc++.so.6",
}


class Report:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.checked = 0

    def section(self, title: str) -> None:
        print(f"\n== {title}")

    def ok(self, msg: str) -> None:
        self.checked += 1
        print(f"  ok    {msg}")

    def note(self, msg: str) -> None:
        print(f"  note  {msg}")

    def fail(self, msg: str) -> None:
        self.problems.append(msg)
        print(f"  FAIL  {msg}")

    def check(self, cond: bool, ok: str, fail: str) -> bool:
        if cond:
            self.ok(ok)
        else:
            self.fail(fail)
        return cond


R = Report()


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


# ---------------------------------------------------------------- osprey --help


class Osprey:
    """The binary's subcommands and, per subcommand, its help text."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self._help: dict[str, str] = {}
        top = self.help(None)
        self.commands: set[str] = set()
        in_commands = False
        for line in top.splitlines():
            if line.strip() == "Commands:":
                in_commands = True
                continue
            if in_commands:
                m = re.match(r"^  ([a-z][a-z0-9-]*)\s", line)
                if m:
                    self.commands.add(m.group(1))
                elif line.strip() and not line.startswith("   "):
                    in_commands = False
        if not self.commands:
            raise SystemExit(f"check_infra: `{binary} --help` lists no commands:\n{top}")

    def help(self, sub: str | None) -> str:
        key = sub or ""
        if key not in self._help:
            argv = [self.binary] + ([sub] if sub else []) + ["--help"]
            out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise SystemExit(f"check_infra: {' '.join(argv)} failed:\n{out.stderr}")
            self._help[key] = out.stdout
        return self._help[key]

    def flags(self, sub: str) -> set[str]:
        return set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", self.help(sub)))

    def required(self, sub: str) -> list[tuple[str, str | None]]:
        """(flag, env var or None) of the options the usage line requires."""
        text = self.help(sub)
        usage = next((l for l in text.splitlines() if l.startswith("Usage:")), "")
        usage = re.sub(r"\[[^\]]*\]", "", usage)  # optional parts
        out = []
        for flag in re.findall(r"(--[a-z0-9-]+) <", usage):
            m = re.search(re.escape(flag) + r" <[^>]*>[^\n]*\[env: ([A-Z0-9_]+)", text)
            out.append((flag, m.group(1) if m else None))
        return out

    def config_keys(self) -> set[str]:
        m = re.search(r"\(keys: ([a-z_, ]+)\)", self.help("coordinator"))
        return {k.strip() for k in m.group(1).split(",")} if m else set()


def check_invocation(osprey: Osprey, where: str, argv: list[str], env: set[str] | None) -> None:
    """argv: the arguments after `osprey`; env: the container's variables
    (None when unknown, as for a Dockerfile CMD)."""
    if not argv:
        R.fail(f"{where}: no osprey subcommand")
        return
    sub = argv[0]
    if sub not in osprey.commands:
        R.fail(f"{where}: `osprey {sub}` is not a subcommand (osprey --help lists {sorted(osprey.commands)})")
        return
    known = osprey.flags(sub)
    used = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")]
    missing = [f for f in used if f not in known]
    R.check(
        not missing,
        f"{where}: `osprey {' '.join(argv)}`: subcommand and flags {used or '(none)'} exist",
        f"{where}: `osprey {sub}` has no {', '.join(missing)} (see `osprey {sub} --help`)",
    )
    if env is not None:
        for flag, var in osprey.required(sub):
            given = flag in used or (var is not None and var in env)
            R.check(
                given,
                f"{where}: required {flag} given" + (f" (via {var})" if var and flag not in used else ""),
                f"{where}: `osprey {sub}` requires {flag}" + (f" or {var}" if var else "") + ", which is not set",
            )


# ---------------------------------------------------------------- Kubernetes


def load_manifests() -> tuple[list[tuple[Path, dict]], dict | None]:
    docs: list[tuple[Path, dict]] = []
    kustomization = None
    files = sorted(p for p in K8S.iterdir() if p.suffix in (".yaml", ".yml"))
    if not files:
        R.fail(f"no manifests in {rel(K8S)}")
    for f in files:
        try:
            loaded = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
        except yaml.YAMLError as e:
            R.fail(f"{rel(f)}: not valid YAML: {e}")
            continue
        if f.name in ("kustomization.yaml", "kustomization.yml"):
            kustomization = loaded[0] if loaded else {}
            continue
        for d in loaded:
            if not isinstance(d, dict) or not {"apiVersion", "kind", "metadata"} <= d.keys():
                R.fail(f"{rel(f)}: a document without apiVersion/kind/metadata")
                continue
            docs.append((f, d))
    return docs, kustomization


def name_of(d: dict) -> str:
    return f"{d['kind']}/{d.get('metadata', {}).get('name', '?')}"


def validate_schemas(docs: list[tuple[Path, dict]]) -> None:
    R.section(f"Kubernetes schemas (kubernetes-validate {kubernetes_validate.version.__version__}, "
              f"Kubernetes {K8S_VERSION}, strict)")
    for f, d in docs:
        where = f"{rel(f)}: {name_of(d)}"
        try:
            v = kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            R.ok(f"{where} is a valid {d['apiVersion']} {d['kind']} (schema {v})")
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top)"
            R.fail(f"{where}: invalid at {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            R.fail(f"{where}: {e.message} (misspelt kind or apiVersion?)")
        except Exception as e:  # noqa: BLE001 - report anything the validator raises
            R.fail(f"{where}: cannot be validated: {type(e).__name__}: {e}")


def check_kustomization(docs: list[tuple[Path, dict]], kust: dict | None) -> None:
    R.section("kustomization")
    if kust is None:
        R.fail(f"{rel(K8S)}/kustomization.yaml is missing")
        return
    listed = kust.get("resources") or []
    files = sorted({f.name for f, _ in docs})
    R.check(sorted(listed) == files and len(listed) == len(set(listed)),
            f"resources list every manifest: {listed}",
            f"kustomization resources {sorted(listed)} differ from the manifest files {files}")
    ns = kust.get("namespace")
    namespaces = {d["metadata"]["name"] for _, d in docs if d["kind"] == "Namespace"}
    R.check(ns in namespaces, f"namespace {ns} is created by the manifests",
            f"kustomization namespace {ns!r} is not one of the Namespace objects {sorted(namespaces)}")
    wrong = [name_of(d) for _, d in docs
             if d["kind"] != "Namespace" and d["metadata"].get("namespace", ns) != ns]
    R.check(not wrong, f"every object is in namespace {ns}", f"objects outside namespace {ns}: {wrong}")
    used = {}
    for _, d in docs:
        for c in containers_of(d):
            repo_, _, tag = c.get("image", "").rpartition(":")
            used.setdefault(repo_, set()).add(tag)
    for entry in kust.get("images") or []:
        tags = used.get(entry.get("name"))
        R.check(tags is not None, f"images: {entry.get('name')} is used",
                f"kustomization images names {entry.get('name')}, which no container uses")
        if tags is not None and "newTag" in entry:
            R.check(tags == {str(entry["newTag"])}, f"images: {entry['name']} tag {entry['newTag']} matches the manifests",
                    f"kustomization sets {entry['name']}:{entry['newTag']} but the manifests use tags {sorted(tags)}")
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            R.fail(f"kubectl kustomize {rel(K8S)} failed: {out.stderr.strip()}")
        else:
            rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
            R.check({name_of(d) for d in rendered} == {name_of(d) for _, d in docs},
                    f"kubectl kustomize renders the {len(rendered)} objects",
                    "kubectl kustomize renders other objects than the manifest files hold")
    else:
        R.note("kubectl not found: `kubectl kustomize` not tried")


def pod_spec(d: dict) -> dict | None:
    if d["kind"] in WORKLOAD_KINDS:
        return d.get("spec", {}).get("template", {}).get("spec")
    if d["kind"] == "Job":
        return d.get("spec", {}).get("template", {}).get("spec")
    if d["kind"] == "Pod":
        return d.get("spec")
    return None


def containers_of(d: dict) -> list[dict]:
    spec = pod_spec(d) or {}
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def pod_labels(d: dict) -> dict:
    if d["kind"] == "Pod":
        return d["metadata"].get("labels") or {}
    return d.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}


def data_of(obj: dict) -> dict[str, str]:
    """A ConfigMap's or Secret's keys and (decoded) values."""
    out = {k: str(v) for k, v in (obj.get("data") or {}).items()}
    if obj["kind"] == "Secret":
        for k, v in list(out.items()):
            try:
                out[k] = base64.b64decode(v).decode()
            except Exception:  # noqa: BLE001
                pass
    out.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
    out.update({k: "<binary>" for k in (obj.get("binaryData") or {})})
    return out


def resolve_port(container: dict, port) -> int | None:
    for p in container.get("ports") or []:
        if port == p.get("containerPort") or port == p.get("name"):
            return p.get("containerPort")
    return None


def osprey_argv(container: dict, image_cmd: dict[str, list[str]]) -> list[str] | None:
    """The osprey arguments a container runs, or None when it runs something else."""
    command = container.get("command")
    args = container.get("args")
    if command:
        if Path(command[0]).name != "osprey":
            return None
        return list(command[1:]) + list(args or [])
    if args is not None:
        return list(args)
    repo_ = container.get("image", "").rpartition(":")[0]
    return image_cmd.get(repo_)


def env_names(container: dict) -> set[str]:
    return {e["name"] for e in container.get("env") or []}


def env_value(container: dict, name: str, objects: dict) -> tuple[str | None, str]:
    """The value of an env var: (value, description)."""
    for e in container.get("env") or []:
        if e["name"] != name:
            continue
        if "value" in e:
            return str(e["value"]), "literal"
        ref = (e.get("valueFrom") or {})
        for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            if key in ref:
                obj = objects.get((kind, ref[key]["name"]))
                value = data_of(obj).get(ref[key]["key"]) if obj else None
                return value, f"{kind} {ref[key]['name']} key {ref[key]['key']}"
        return None, "computed"
    return None, "unset"


def check_references(docs: list[tuple[Path, dict]], osprey: Osprey, image_cmd: dict[str, list[str]]) -> dict:
    """Cross-references; returns what the smoke run needs."""
    R.section("cross-references")
    objects = {(d["kind"], d["metadata"]["name"]): d for _, d in docs}
    found: dict = {}
    coordinator = None  # (workload, container)
    workers = []
    for _, d in docs:
        spec = pod_spec(d)
        if spec is None:
            continue
        wname = name_of(d)
        if d["kind"] in WORKLOAD_KINDS:
            match = (d.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
            labels = pod_labels(d)
            R.check(bool(match) and all(labels.get(k) == v for k, v in match.items()),
                    f"{wname}: selector {match} matches its pod labels",
                    f"{wname}: selector {match} does not match its pod template labels {labels}")
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for v in volumes.values():
            for kind, key, name_key in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName")):
                if key not in v:
                    continue
                ref = v[key].get(name_key)
                obj = objects.get((kind, ref))
                if obj is None:
                    R.check(bool(v[key].get("optional")), f"{wname}: volume {v['name']}: optional {kind} {ref} absent",
                            f"{wname}: volume {v['name']} names {kind} {ref}, which the manifests do not define")
                    continue
                keys = data_of(obj)
                for item in v[key].get("items") or []:
                    R.check(item["key"] in keys, f"{wname}: volume {v['name']}: {kind} {ref} has key {item['key']}",
                            f"{wname}: volume {v['name']}: {kind} {ref} has no key {item['key']!r} (keys: {sorted(keys)})")
        for c in containers_of(d):
            where = f"{wname} container {c['name']}"
            for e in c.get("env") or []:
                ref = e.get("valueFrom") or {}
                for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    if key not in ref:
                        continue
                    r = ref[key]
                    obj = objects.get((kind, r["name"]))
                    has = obj is not None and r["key"] in data_of(obj)
                    if has:
                        R.ok(f"{where}: env {e['name']} <- {kind} {r['name']} key {r['key']}")
                    elif r.get("optional"):
                        R.ok(f"{where}: env {e['name']} <- optional {kind} {r['name']} key {r['key']} "
                             "(absent: the variable is unset)")
                    elif obj is None:
                        R.fail(f"{where}: env {e['name']} names {kind} {r['name']}, which the manifests do not define")
                    else:
                        R.fail(f"{where}: env {e['name']}: {kind} {r['name']} has no key {r['key']!r} "
                               f"(keys: {sorted(data_of(obj))})")
            for e in c.get("envFrom") or []:
                for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                    if key in e:
                        n = e[key]["name"]
                        R.check((kind, n) in objects or bool(e[key].get("optional")),
                                f"{where}: envFrom {kind} {n} exists",
                                f"{where}: envFrom names {kind} {n}, which the manifests do not define")
            for m in c.get("volumeMounts") or []:
                R.check(m["name"] in volumes, f"{where}: mount {m['mountPath']} <- volume {m['name']}",
                        f"{where}: mounts volume {m['name']!r}, which the pod does not define")
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(kind)
                if not probe:
                    continue
                for action in ("httpGet", "tcpSocket", "grpc"):
                    if action in probe:
                        port = resolve_port(c, probe[action].get("port"))
                        R.check(port is not None, f"{where}: {kind} port {probe[action].get('port')} is container port {port}",
                                f"{where}: {kind} port {probe[action].get('port')!r} is not one of the container's ports")
                if "httpGet" in probe:
                    path = probe["httpGet"].get("path")
                    R.check(path == HEALTH_PATH, f"{where}: {kind} GETs {path}",
                            f"{where}: {kind} GETs {path!r}; the coordinator's unauthenticated health route is {HEALTH_PATH}")
            image = c.get("image", "")
            R.check(image.rpartition(":")[0] in (CPU_IMAGE, GPU_IMAGE) and ":" in image,
                    f"{where}: image {image}", f"{where}: image {image!r} is neither {CPU_IMAGE}:<tag> nor {GPU_IMAGE}:<tag>")
            argv = osprey_argv(c, image_cmd)
            if argv is None:
                R.note(f"{where} does not run osprey")
                continue
            check_invocation(osprey, where, argv, env_names(c))
            for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                R.check(var in env_names(c), f"{where}: {var} set (the root is on S3)",
                        f"{where}: {var} is not set, but both coordinator and workers read and write the S3 root")
            if argv and argv[0] == "coordinator":
                if coordinator is not None:
                    R.fail(f"{where}: a second coordinator ({name_of(coordinator[0])} is one): one root, one coordinator")
                coordinator = (d, c, argv)
            elif argv and argv[0] == "worker":
                workers.append((d, c, argv))
    if coordinator is None:
        R.fail("no container runs `osprey coordinator`")
        return found
    found.update(check_coordinator(coordinator, objects, docs, osprey))
    found["workers"] = [check_worker(w, objects, docs, found) for w in workers]
    if not workers:
        R.fail("no container runs `osprey worker`")
    check_gpu(docs)
    check_hpa(docs, objects)
    check_secrets(docs)
    return found


def flag_value(argv: list[str], flag: str) -> str | None:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def check_coordinator(coord, objects: dict, docs, osprey: Osprey) -> dict:
    d, c, argv = coord
    where = f"{name_of(d)} container {c['name']}"
    spec = d.get("spec", {})
    if d["kind"] == "Deployment":
        R.check(spec.get("replicas") == 1, f"{name_of(d)}: replicas 1",
                f"{name_of(d)}: replicas must be 1 (the coordinator owns the job table), not {spec.get('replicas')!r}")
        strategy = (spec.get("strategy") or {}).get("type")
        R.check(strategy == "Recreate", f"{name_of(d)}: strategy Recreate",
                f"{name_of(d)}: strategy must be Recreate (a rolling update runs two coordinators over one root), "
                f"not {strategy!r}")
    for kind in ("readinessProbe", "livenessProbe"):
        R.check("httpGet" in (c.get(kind) or {}), f"{where}: has an HTTP {kind}",
                f"{where}: needs an httpGet {kind} on {HEALTH_PATH}")
    # The config file: from --config or OSPREY_CONFIG, out of a ConfigMap mount.
    config_path = flag_value(argv, "--config") or env_value(c, "OSPREY_CONFIG", objects)[0]
    toml_text, toml_cfg = None, {}
    if config_path:
        pod = pod_spec(d) or {}
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for m in c.get("volumeMounts") or []:
            prefix = m["mountPath"].rstrip("/") + "/"
            v = volumes.get(m["name"], {})
            if not config_path.startswith(prefix) or "configMap" not in v:
                continue
            inner = config_path[len(prefix):]
            if m.get("subPath"):
                continue
            items = v["configMap"].get("items")
            key = next((i["key"] for i in items if i["path"] == inner), None) if items else inner
            cm = objects.get(("ConfigMap", v["configMap"]["name"]))
            if cm is not None and key in data_of(cm):
                toml_text = data_of(cm)[key]
        if R.check(toml_text is not None, f"{where}: --config {config_path} comes from a ConfigMap mount",
                   f"{where}: --config {config_path} is not a file of a mounted ConfigMap"):
            try:
                toml_cfg = tomllib.loads(toml_text)
                allowed = osprey.config_keys()
                unknown = sorted(set(toml_cfg) - allowed)
                R.check(not unknown, f"{where}: osprey.toml keys {sorted(toml_cfg)} are all known",
                        f"{where}: osprey.toml has unknown keys {unknown} (allowed: {sorted(allowed)})")
            except tomllib.TOMLDecodeError as e:
                R.fail(f"{where}: {config_path} is not valid TOML: {e}")
    # Where it listens: the flag, else OSPREY_LISTEN, else the file, else the default.
    listen = (flag_value(argv, "--listen") or env_value(c, "OSPREY_LISTEN", objects)[0]
              or toml_cfg.get("listen") or "127.0.0.1:8080")
    host, _, port = listen.rpartition(":")
    ports = {p.get("containerPort") for p in c.get("ports") or []}
    R.check(host in ("0.0.0.0", "[::]", "::") and port.isdigit() and int(port) in ports,
            f"{where}: listens on {listen}, container port {port}",
            f"{where}: listens on {listen!r}: must be all interfaces on a declared container port {sorted(ports)}")
    root = flag_value(argv, "--root") or env_value(c, "OSPREY_ROOT", objects)[0] or toml_cfg.get("root")
    R.check(bool(root), f"{where}: root {root}", f"{where}: no root (--root, OSPREY_ROOT or root in osprey.toml)")
    keys, how = env_value(c, "OSPREY_API_KEYS", objects)
    if keys is None and toml_cfg.get("api_keys"):
        keys, how = ",".join(toml_cfg["api_keys"]), "osprey.toml"
    R.check(keys is not None, f"{where}: API keys from {how}", f"{where}: no API keys (OSPREY_API_KEYS from a Secret)")
    # Services: each selects some pods; one reaches the coordinator's port.
    labels = pod_labels(d)
    services = []
    for _, s in docs:
        if s["kind"] != "Service":
            continue
        sel = s.get("spec", {}).get("selector") or {}
        selects = [name_of(w) for _, w in docs if pod_spec(w) is not None and sel
                   and all(pod_labels(w).get(k) == v for k, v in sel.items())]
        R.check(bool(selects), f"{name_of(s)}: selector {sel} selects {selects}",
                f"{name_of(s)}: selector {sel} matches no pod template")
        if sel and all(labels.get(k) == v for k, v in sel.items()):
            for p in s["spec"].get("ports") or []:
                target = p.get("targetPort", p.get("port"))
                cport = resolve_port(c, target)
                if R.check(cport is not None, f"{name_of(s)}: port {p['port']} -> coordinator port {cport}",
                           f"{name_of(s)}: targetPort {target!r} is not a coordinator container port"):
                    services.append((s["metadata"]["name"], p["port"]))
    R.check(bool(services), f"the coordinator is reachable through Service(s) {services}",
            "no Service selects the coordinator's pods")
    return {"coordinator": (d, c, argv), "toml": toml_text, "api_keys": keys, "services": services}


def parse_keys(keys: str | None) -> dict[str, str]:
    out = {}
    for pair in (keys or "").split(","):
        role, _, key = pair.strip().partition(":")
        if key:
            out[key] = role
    return out


def check_worker(worker, objects: dict, docs, found: dict) -> dict:
    d, c, argv = worker
    where = f"{name_of(d)} container {c['name']}"
    R.check(not c.get("ports"), f"{where}: no container ports (the worker serves no HTTP)",
            f"{where}: declares ports, but `osprey worker` listens on none")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(kind) or {}
        R.check(not ({"httpGet", "tcpSocket", "grpc"} & probe.keys()), f"{where}: no network {kind}",
                f"{where}: {kind} probes the network, but `osprey worker` listens on nothing")
    grace = (pod_spec(d) or {}).get("terminationGracePeriodSeconds")
    R.check(isinstance(grace, int) and grace >= 300, f"{where}: terminationGracePeriodSeconds {grace}",
            f"{where}: terminationGracePeriodSeconds must be set, long enough to finish a task (>= 300 s), "
            f"not {grace!r}")
    url = flag_value(argv, "--coordinator") or env_value(c, "OSPREY_COORDINATOR", objects)[0]
    m = re.match(r"^http://([a-z0-9.-]+):(\d+)/?$", url or "")
    ok = False
    if m:
        host, port = m.group(1), int(m.group(2))
        ns = d["metadata"].get("namespace", "osprey")
        for name, sport in found.get("services", []):
            hosts = {name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"}
            ok = ok or (host in hosts and port == sport)
    R.check(ok, f"{where}: coordinator URL {url} is the coordinator's Service",
            f"{where}: coordinator URL {url!r} is not http://<a Service selecting the coordinator>:<its port> "
            f"(Services: {found.get('services')})")
    key, how = env_value(c, "OSPREY_API_KEY", objects)
    if key is None:
        key = flag_value(argv, "--api-key")
    roles = parse_keys(found.get("api_keys"))
    R.check(roles.get(key) in ("operator", "admin"),
            f"{where}: its key ({how}) is an {roles.get(key)} key of the coordinator",
            f"{where}: its key ({how}) is not among the coordinator's operator or admin keys")
    return {"workload": d, "container": c, "argv": argv, "key": key}


def check_gpu(docs) -> None:
    gpu = []
    for _, d in docs:
        for c in containers_of(d):
            limits = (c.get("resources") or {}).get("limits") or {}
            wants = int(str(limits.get("nvidia.com/gpu", 0))) > 0
            cuda = c.get("image", "").rpartition(":")[0] == GPU_IMAGE
            where = f"{name_of(d)} container {c['name']}"
            if wants or cuda:
                R.check(wants and cuda, f"{where}: {GPU_IMAGE} with nvidia.com/gpu {limits.get('nvidia.com/gpu')}",
                        f"{where}: the CUDA image and a nvidia.com/gpu limit go together "
                        f"(image {c.get('image')}, limit {limits.get('nvidia.com/gpu')})")
            if wants:
                spec = pod_spec(d) or {}
                R.check(bool(spec.get("nodeSelector") or spec.get("tolerations") or spec.get("affinity")),
                        f"{name_of(d)}: GPU node selector/tolerations set",
                        f"{name_of(d)}: requests a GPU but has no nodeSelector, tolerations or affinity for GPU nodes")
                gpu.append(name_of(d))
    R.check(bool(gpu), f"GPU workers: {gpu}", "no workload requests nvidia.com/gpu")


def check_hpa(docs, objects: dict) -> None:
    hpas = [d for _, d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    R.check(bool(hpas), f"{len(hpas)} HorizontalPodAutoscaler(s)", "no HorizontalPodAutoscaler")
    for h in hpas:
        ref = h["spec"]["scaleTargetRef"]
        target = objects.get((ref.get("kind"), ref.get("name")))
        if not R.check(target is not None and ref.get("kind") == "Deployment",
                       f"{name_of(h)} scales {ref.get('kind')}/{ref.get('name')}",
                       f"{name_of(h)}: scaleTargetRef {ref.get('kind')}/{ref.get('name')} is not a Deployment "
                       "of the manifests"):
            continue
        R.check(ref.get("apiVersion") == target["apiVersion"], f"{name_of(h)}: target apiVersion {ref.get('apiVersion')}",
                f"{name_of(h)}: scaleTargetRef apiVersion {ref.get('apiVersion')} != {target['apiVersion']}")
        R.check("replicas" not in target["spec"], f"{name_of(target)} leaves replicas to the HPA",
                f"{name_of(target)} sets replicas, which every `kubectl apply` would reset under {name_of(h)}")
        lo, hi = h["spec"].get("minReplicas", 1), h["spec"]["maxReplicas"]
        R.check(1 <= lo <= hi, f"{name_of(h)}: {lo}..{hi} replicas", f"{name_of(h)}: minReplicas {lo} > maxReplicas {hi}")
        for m in h["spec"].get("metrics") or []:
            if m.get("type") != "Resource":
                continue
            res = m["resource"]["name"]
            for c in containers_of(target):
                has = res in ((c.get("resources") or {}).get("requests") or {})
                R.check(has, f"{name_of(h)}: {res} metric; {c['name']} requests {res}",
                        f"{name_of(h)}: scales on {res} utilisation, but container {c['name']} has no {res} request")


def check_secrets(docs) -> None:
    for _, d in docs:
        if d["kind"] != "Secret":
            continue
        real = [k for k, v in data_of(d).items() if "CHANGE-ME" not in v]
        R.check(not real, f"{name_of(d)}: every value is a CHANGE-ME placeholder",
                f"{name_of(d)}: keys {real} hold something other than a CHANGE-ME placeholder; "
                "never commit real credentials")


# ---------------------------------------------------------------- Dockerfiles


def dockerignore() -> list[tuple[bool, str]]:
    f = REPO / ".dockerignore"
    pats = []
    if f.exists():
        for line in f.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            neg = line.startswith("!")
            pats.append((neg, line.lstrip("!").strip("/")))
    return pats


def ignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    out = False
    for neg, pat in patterns:
        alts = [pat] + ([pat[3:]] if pat.startswith("**/") else [])
        if any(fnmatch.fnmatchcase(p, a) for p in prefixes for a in alts):
            out = not neg
    return out


def stages_of(path: Path) -> list[dict]:
    with open(path, "rb") as f:
        structure = DockerfileParser(fileobj=f).structure
    stages: list[dict] = []
    for ins in structure:
        if ins["instruction"] == "COMMENT":
            continue
        if ins["instruction"] == "FROM":
            m = re.match(r"^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?\s*$", ins["value"], re.I)
            stages.append({"base": m.group(1), "name": m.group(2), "ins": []})
        elif stages:
            stages[-1]["ins"].append(ins)
    return stages


def copy_args(value: str) -> tuple[dict, list[str], str]:
    flags = {}
    rest = value.strip()
    while rest.startswith("--"):
        tok, _, rest = rest.partition(" ")
        k, _, v = tok[2:].partition("=")
        flags[k] = v
        rest = rest.strip()
    if rest.startswith("["):
        paths = json.loads(rest)
    else:
        paths = rest.split()
    return flags, paths[:-1], paths[-1]


def exec_form(value: str) -> list[str] | None:
    try:
        v = json.loads(value)
        return v if isinstance(v, list) else None
    except json.JSONDecodeError:
        return None


def codename(image: str) -> str | None:
    m = re.search(r"(bookworm|bullseye|trixie|buster|ubuntu\d\d\.\d\d|jammy|noble|focal)", image)
    return m.group(1) if m else None


def check_dockerfile(path: Path, cuda: bool, osprey: Osprey, binary: str, image_cmd: dict) -> None:
    R.section(f"{rel(path)} (dockerfile-parse)")
    if not path.exists():
        R.fail(f"{rel(path)} is missing")
        return
    stages = stages_of(path)
    if not stages:
        R.fail(f"{rel(path)}: no FROM")
        return
    patterns = dockerignore()
    names = []
    build_stage = None
    flagged: list[str] = []  # AVX-512 / native CPU / non-avx2 SIMD level
    scanned = 0
    for i, st in enumerate(stages):
        label = st["name"] or f"stage {i}"
        for ins in st["ins"]:
            kind, value = ins["instruction"], ins["value"]
            line = f"{rel(path)}:{ins['startline'] + 1}"
            if kind in ("COPY", "ADD"):
                flags, sources, dest = copy_args(value)
                if "from" in flags:
                    R.check(flags["from"] in names or flags["from"].isdigit(),
                            f"{label}: COPY --from={flags['from']} {' '.join(sources)} (an earlier stage)",
                            f"{line}: COPY --from={flags['from']} names no earlier stage")
                    continue
                for s in sources:
                    if re.match(r"^https?://", s):
                        continue
                    hits = list(REPO.glob(s.lstrip("/"))) if any(ch in s for ch in "*?[") else [REPO / s.lstrip("/")]
                    if not (hits and all(h.exists() for h in hits)):
                        R.fail(f"{line}: {kind} source {s!r} does not exist relative to the repository root "
                               "(the build context)")
                    elif ignored(s.lstrip("/"), patterns):
                        R.fail(f"{line}: {kind} source {s!r} is excluded by .dockerignore")
                    else:
                        R.ok(f"{label}: {kind} {s}: in the build context, not .dockerignored")
            if kind in ("ENV", "ARG", "RUN"):
                scanned += 1
                low = value.lower()
                if re.search(r"avx-?512", low):
                    flagged.append(f"{line}: mentions AVX-512")
                if re.search(r"(march|target-cpu|mtune)=native", low):
                    flagged.append(f"{line}: targets the build machine's CPU (native)")
                for simd in re.findall(r"osprey_faiss_simd=(\S+)", low):
                    if simd != "avx2":
                        flagged.append(f"{line}: OSPREY_FAISS_SIMD={simd}")
            if kind == "RUN" and "cargo build" in value:
                build_stage = st
        names.append(st["name"])
    R.check(not flagged, f"portable: none of the {scanned} ENV/ARG/RUN instructions adds AVX-512 or native-CPU flags",
            "the image must run on any AVX2 CPU: " + "; ".join(flagged))
    final = stages[-1]
    fins = final["ins"]

    # The build.
    if R.check(build_stage is not None, "a stage runs cargo build", f"{rel(path)}: no stage runs `cargo build`"):
        run = " ".join(i["value"] for i in build_stage["ins"] if i["instruction"] == "RUN" and "cargo build" in i["value"])
        for needle, why in (("--release", "release profile"), ("--locked", "Cargo.lock as committed")):
            R.check(needle in run, f"cargo build {needle} ({why})", f"{rel(path)}: cargo build lacks {needle}")
        R.check(bool(re.search(r"(-p|--package)[ =]osprey-cli\b", run)), "cargo build -p osprey-cli",
                f"{rel(path)}: cargo build must build -p osprey-cli")
        features = re.findall(r"(?:--features|-F)[ =]([\w,\-/]+)", run)
        has_cuda = any("cuda" in f.split(",") for f in features)
        if cuda:
            R.check(has_cuda, "cargo build --features cuda", f"{rel(path)}: the CUDA image must build --features cuda")
            cli = tomllib.loads((REPO / "jobs/osprey-cli/Cargo.toml").read_text())
            R.check("cuda" in (cli.get("features") or {}), "jobs/osprey-cli defines the cuda feature",
                    "jobs/osprey-cli/Cargo.toml has no `cuda` feature")
            env = " ".join(i["value"] for i in build_stage["ins"] if i["instruction"] in ("ENV", "ARG"))
            R.check("CUDA_COMPUTE_CAP" in env, "CUDA_COMPUTE_CAP set (no nvidia-smi in a docker build)",
                    f"{rel(path)}: set CUDA_COMPUTE_CAP in the build stage: candle's kernels cannot detect the GPU "
                    "during `docker build`")
        else:
            R.check(not has_cuda, "the CPU build has no cuda feature", f"{rel(path)}: the CPU image builds --features cuda")
        copied = []
        for i in build_stage["ins"]:
            if i["instruction"] in ("COPY", "ADD"):
                flags, sources, _ = copy_args(i["value"])
                if "from" not in flags:
                    copied += [s.strip("/").rstrip("/") for s in sources]
        ws = tomllib.loads((REPO / "Cargo.toml").read_text())
        for member in ws["workspace"]["members"] + ["Cargo.toml", "Cargo.lock", ".cargo"]:
            R.check(any(member == s or member.startswith(s + "/") for s in copied) or "." in copied,
                    f"build stage copies {member}", f"{rel(path)}: the build stage does not copy {member}")
        cfg = REPO / ".cargo" / "config.toml"
        if cfg.exists():
            lines = [l for l in cfg.read_text().splitlines() if not l.strip().startswith("#")]
            R.check(not any(re.search(r"avx-?512", l, re.I) for l in lines),
                    ".cargo/config.toml (FAISS's flags in the image) has no AVX-512",
                    ".cargo/config.toml adds AVX-512 flags: images built with it need AVX-512 CPUs")

    # Base images.
    builder_base = build_stage["base"] if build_stage else ""
    if cuda:
        dm = re.match(r"^nvidia/cuda:([\d.]+)-(?:cudnn\d*-)?devel-(\S+)$", builder_base)
        rm = re.match(r"^nvidia/cuda:([\d.]+)-(?:cudnn\d*-)?runtime-(\S+)$", final["base"])
        R.check(bool(dm and rm and dm.groups() == rm.groups()),
                f"builder {builder_base} and runtime {final['base']} match",
                f"{rel(path)}: the builder must be nvidia/cuda:<v>-devel-<os> and the runtime "
                f"nvidia/cuda:<v>-runtime-<os>, same <v> and <os> (have {builder_base}, {final['base']})")
    else:
        R.check(codename(builder_base) is not None and codename(builder_base) == codename(final["base"]),
                f"builder {builder_base} and runtime {final['base']} are the same distribution release",
                f"{rel(path)}: builder {builder_base} and runtime {final['base']} are different releases "
                "(the FFmpeg libraries' sonames differ)")

    # The final stage.
    entry = [exec_form(i["value"]) for i in fins if i["instruction"] == "ENTRYPOINT"]
    R.check(bool(entry) and entry[-1] in (["osprey"], ["/usr/local/bin/osprey"]),
            f"final stage ENTRYPOINT {entry[-1] if entry else None}",
            f"{rel(path)}: the final stage's ENTRYPOINT must be [\"osprey\"] (exec form), not {entry[-1] if entry else None}")
    dests = [copy_args(i["value"])[2] for i in fins if i["instruction"] in ("COPY", "ADD")]
    R.check("/usr/local/bin/osprey" in dests or "/usr/local/bin/" in dests, "the binary is /usr/local/bin/osprey",
            f"{rel(path)}: the final stage does not copy the binary to /usr/local/bin/osprey")
    users = [i["value"].strip() for i in fins if i["instruction"] == "USER"]
    R.check(bool(users) and users[-1].split(":")[0] not in ("root", "0"), f"runs as user {users[-1] if users else None}",
            f"{rel(path)}: the final stage must switch to a non-root USER")
    models = None
    for i in fins:
        if i["instruction"] == "ENV":
            m = re.search(r"OSPREY_MODELS=(\S+)", i["value"])
            if m:
                models = m.group(1)
    R.check(models is not None and models in [d.rstrip("/") for d in dests],
            f"OSPREY_MODELS={models}, copied in", f"{rel(path)}: set ENV OSPREY_MODELS to the folder the models are copied to")
    cmd = [exec_form(i["value"]) for i in fins if i["instruction"] == "CMD"]
    if R.check(bool(cmd) and cmd[-1] is not None, f"CMD {cmd[-1] if cmd else None}",
               f"{rel(path)}: the final stage needs an exec-form CMD (the default subcommand)"):
        check_invocation(osprey, f"{rel(path)} CMD", cmd[-1], None)
        image_cmd[GPU_IMAGE if cuda else CPU_IMAGE] = cmd[-1]
        if cmd[-1] and cmd[-1][0] == "coordinator":
            listen = flag_value(cmd[-1], "--listen") or ""
            exposed = " ".join(i["value"] for i in fins if i["instruction"] == "EXPOSE").split()
            port = listen.rpartition(":")[2]
            R.check(listen.startswith(("0.0.0.0:", "[::]:")) and any(e.split("/")[0] == port for e in exposed),
                    f"the coordinator listens on {listen}, EXPOSE {exposed}",
                    f"{rel(path)}: CMD --listen {listen!r} should be 0.0.0.0:<an EXPOSEd port> (EXPOSE {exposed})")
    if cuda:
        return
    # The CPU runtime installs the packages of every library the binary links,
    # when this binary was built on the image's distribution release.
    install = " ".join(i["value"] for i in fins if i["instruction"] == "RUN").split()
    here = ""
    try:
        here = re.search(r"^VERSION_CODENAME=(\S+)", Path("/etc/os-release").read_text(), re.M).group(1)
    except (OSError, AttributeError):
        pass
    readelf = shutil.which("readelf")
    if here != codename(final["base"]) or readelf is None:
        R.note(f"runtime packages vs the binary's libraries not compared (this machine: {here or '?'}, "
               f"image: {codename(final['base'])}, readelf: {readelf})")
        return
    dyn = subprocess.run([readelf, "-d", binary], capture_output=True, text=True).stdout
    for so in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn):
        if so in BASE_LIBS:
            continue
        m = re.match(r"^lib(av\w+|sw\w+|postproc)\.so\.(\d+)$", so)
        if m:
            wanted = [f"lib{m.group(1)}{m.group(2)}"]
        elif so == "libgomp.so.1":
            wanted = ["libgomp1"]
        elif so in ("libblas.so.3", "liblapack.so.3"):
            wanted = ["libopenblas0", "libopenblas0-pthread", "libblas3" if "blas" in so else "liblapack3"]
        else:
            R.fail(f"{rel(path)}: the binary links {so}; add its package to the runtime stage "
                   "(and its soname to check_infra.py)")
            continue
        R.check(any(w in install for w in wanted), f"runtime stage installs {wanted[0]} for {so}",
                f"{rel(path)}: the binary links {so}, but the runtime stage installs none of {wanted}")


# ---------------------------------------------------------------- smoke run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, key: str | None = None, timeout: float = 5) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def stop(proc: subprocess.Popen, grace: float) -> int | None:
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def smoke(binary: str, found: dict) -> None:
    R.section("smoke run: the coordinator and a worker as the manifests configure them (local root)")
    if "coordinator" not in found or found.get("api_keys") is None:
        R.fail("smoke run skipped: no usable coordinator configuration (see above)")
        return
    d, c, argv = found["coordinator"]
    tmp = Path(tempfile.mkdtemp(prefix="osprey-infra-"))
    port = free_port()
    argv = list(argv)
    config_path = flag_value(argv, "--config")
    if found.get("toml") is not None and config_path:
        (tmp / "osprey.toml").write_text(found["toml"])
        argv[argv.index("--config") + 1] = str(tmp / "osprey.toml")
    if "--listen" in argv:
        argv[argv.index("--listen") + 1] = f"127.0.0.1:{port}"
    else:
        argv += ["--listen", f"127.0.0.1:{port}"]
    # The root is on S3 in the cluster; here a local folder stands in.
    argv += ["--root", str(tmp / "root")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSPREY_", "AWS_"))}
    env.update({"OSPREY_API_KEYS": found["api_keys"], "OSPREY_LOG": "info"})
    log = open(tmp / "coordinator.log", "w+")
    coord = subprocess.Popen([binary] + argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    worker_proc = None
    try:
        probe = (c.get("readinessProbe") or {}).get("httpGet", {}).get("path", HEALTH_PATH)
        status, deadline = None, time.time() + 60
        while time.time() < deadline and coord.poll() is None:
            try:
                status, _ = http(f"http://127.0.0.1:{port}{probe}", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        if not R.check(status == 200, f"`osprey {' '.join(argv)}`: GET {probe} -> 200",
                       f"the coordinator with the manifest's settings did not answer GET {probe} with 200 "
                       f"(status {status}, exit {coord.poll()}):\n{(tmp / 'coordinator.log').read_text()}"):
            return
        workers = found.get("workers") or []
        key = workers[0]["key"] if workers else next(iter(parse_keys(found["api_keys"])), None)
        status, text = http(f"http://127.0.0.1:{port}/metrics", key)
        if R.check(status == 200, "GET /metrics with the workers' key -> 200",
                   f"GET /metrics with the workers' key answered {status}: {text[:300]}"):
            metrics = {l.split("{")[0].split()[0] for l in text.splitlines() if l and not l.startswith("#")}
            named = set()
            for f in sorted(K8S.glob("*.y*ml")) + [REPO / "infra" / "README.md"]:
                if f.exists():
                    named |= set(re.findall(r"\bosprey_[a-z0-9_]+\b", f.read_text()))
            unknown = sorted(named - metrics)
            R.check(not unknown, f"metrics named in infra/ exist: {sorted(named)}",
                    f"infra/ names metrics the coordinator does not export: {unknown} (it has {sorted(metrics)})")
        models = Path(os.environ.get("OSPREY_MODELS") or REPO / "models")
        if not workers:
            return
        if not all((models / m).exists() for m in ("mmod_human_face_detector.dat", "shape_predictor_5_face_landmarks.dat",
                                                   "dlib_face_recognition_resnet_model_v1.dat")):
            R.note(f"no face models in {models} (infra/scripts/fetch-models.sh): worker smoke run skipped")
            return
        w = workers[0]
        wenv = {k: v for k, v in os.environ.items() if not k.startswith(("OSPREY_", "AWS_"))}
        wenv.update({"OSPREY_COORDINATOR": f"http://127.0.0.1:{port}", "OSPREY_API_KEY": w["key"] or "",
                     "OSPREY_MODELS": str(models), "OSPREY_LOG": "info"})
        wargv = [a for a in w["argv"]]
        wlog = open(tmp / "worker.log", "w+")
        worker_proc = subprocess.Popen([binary] + wargv, env=wenv, stdout=wlog, stderr=subprocess.STDOUT)
        time.sleep(4)
        alive = worker_proc.poll() is None
        if R.check(alive, f"`osprey {' '.join(wargv)}` with the manifest's key runs and polls for tasks",
                   f"the worker exited ({worker_proc.returncode}):\n{(tmp / 'worker.log').read_text()}"):
            rc = stop(worker_proc, 20)
            R.check(rc == 0, "the worker stops cleanly on SIGTERM",
                    f"the worker did not exit 0 within 20 s of SIGTERM (exit {rc}):\n{(tmp / 'worker.log').read_text()}")
        rc = stop(coord, 20)
        R.check(rc == 0, "the coordinator stops cleanly on SIGTERM",
                f"the coordinator did not exit 0 within 20 s of SIGTERM (exit {rc}):\n"
                f"{(tmp / 'coordinator.log').read_text()}")
    finally:
        for p in (worker_proc, coord):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- main


def main() -> int:
    binary = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OSPREY_BIN")
    if not binary or not os.access(binary, os.X_OK):
        print(f"check_infra: give the osprey binary as the argument or $OSPREY_BIN (got {binary!r})", file=sys.stderr)
        return 2
    print(f"check_infra: {rel(K8S)} and {rel(DOCKER)} against {binary}")
    osprey = Osprey(binary)
    image_cmd: dict[str, list[str]] = {}
    check_dockerfile(DOCKER / "Dockerfile", False, osprey, binary, image_cmd)
    check_dockerfile(DOCKER / "Dockerfile.cuda", True, osprey, binary, image_cmd)
    docs, kust = load_manifests()
    validate_schemas(docs)
    check_kustomization(docs, kust)
    found = check_references(docs, osprey, image_cmd)
    smoke(binary, found)
    print()
    if R.problems:
        print(f"check_infra: {len(R.problems)} problem(s) ({R.checked} checks passed):", file=sys.stderr)
        for p in R.problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"check_infra: all {R.checked} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
