"""The image `make image` built (scripts/build-image.sh) against what the Dockerfile declares.

Run by `make image` after the build: IMAGE_OUT (default target/image) must hold its output.
The Dockerfile is read through scripts/dockerfile_runtime.py, the same reading the build used,
and also checked here line by line for what the reader could miss.
"""
import hashlib
import json
import os
import pathlib
import re
import subprocess
import tarfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
OUT = pathlib.Path(os.environ.get("IMAGE_OUT", REPO / "target" / "image"))
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))


def blob(layout, digest):
    algo, hexd = digest.split(":")
    return layout / "blobs" / algo / hexd


@pytest.fixture(scope="module")
def image():
    layout = OUT / "oci"
    assert (layout / "index.json").is_file(), "no image at %s: run make image" % layout
    index = json.loads((layout / "index.json").read_text())
    (desc,) = index["manifests"]
    manifest = json.loads(blob(layout, desc["digest"]).read_text())
    config = json.loads(blob(layout, manifest["config"]["digest"]).read_text())
    return layout, manifest, config


@pytest.fixture(scope="module")
def declared():
    out = subprocess.run(
        ["python3", str(REPO / "scripts/dockerfile_runtime.py"), str(REPO / "Dockerfile")],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def test_config_is_what_the_dockerfile_declares(image, declared):
    _, _, config = image
    c = config["config"]
    assert config["os"] == "linux" and config["architecture"] == "amd64"
    assert c["User"] == declared["user"] == "65532:65532"
    assert c["Entrypoint"] == declared["entrypoint"] == ["/usr/local/bin/regcred-refresher"]
    assert sorted(c["ExposedPorts"]) == sorted(declared["exposed_ports"]) == ["8080/tcp"]
    labels = dict(c["Labels"])
    # Build-time values (the Dockerfile's ARG defaults are "unknown"): a commit and a time.
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", labels.pop("org.opencontainers.image.revision"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", labels.pop("org.opencontainers.image.created"))
    want = dict(declared["labels"])
    want.pop("org.opencontainers.image.revision")
    want.pop("org.opencontainers.image.created")
    assert labels == want
    # What distroless's nonroot config carries besides.
    assert c.get("WorkingDir") == "/home/nonroot"
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in c["Env"]
    assert not c.get("Cmd")


def test_the_dockerfile_reader_sees_every_runtime_instruction():
    # A reader that skipped an instruction would let the image drift without a failing test.
    text = (REPO / "Dockerfile").read_text()
    runtime = text[text.rindex("\nFROM "):]
    words = {line.split()[0] for line in runtime.splitlines()
             if line and not line.startswith((" ", "#"))}
    assert words <= {"FROM", "ARG", "LABEL", "COPY", "USER", "EXPOSE", "ENTRYPOINT"}, words


@pytest.fixture(scope="module")
def layer(image):
    layout, manifest, _ = image
    (only,) = manifest["layers"]
    return tarfile.open(blob(layout, only["digest"]))


def test_the_layer_is_the_runtime_layout_of_cc_debian12_nonroot(layer):
    members = {m.name.lstrip("./"): m for m in layer.getmembers()}
    binary = members["usr/local/bin/regcred-refresher"]
    assert binary.mode & 0o111 and binary.uid == 0
    release = TARGET / "release" / "regcred-refresher"
    data = layer.extractfile(binary).read()
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(release.read_bytes()).hexdigest()
    for lib in ("lib64/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libc.so.6",
                "lib/x86_64-linux-gnu/libgcc_s.so.1"):
        assert lib in members or ("usr/" + lib) in members, lib
    # No shell, no package manager, no coreutils.
    for absent in ("bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/dpkg", "usr/bin/apt", "bin/ls", "usr/bin/ls"):
        assert absent not in members, absent
    home = members["home/nonroot"]
    assert (home.uid, home.gid, home.mode & 0o777) == (65532, 65532, 0o700)
    assert members["tmp"].mode & 0o1777 == 0o1777
    passwd = layer.extractfile(members["etc/passwd"]).read().decode()
    assert "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" in passwd.splitlines()
    bundle = layer.extractfile(members["etc/ssl/certs/ca-certificates.crt"]).read().decode()
    assert bundle.count("BEGIN CERTIFICATE") > 100
    assert 'VERSION_ID="12"' in layer.extractfile(members["usr/lib/os-release"]).read().decode()


def test_the_binary_runs_in_the_image_root_as_nonroot():
    # The image's own glibc and loader, as uid 65532: what a container of it would run.
    got = subprocess.run(
        ["chroot", "--userspec=65532:65532", str(OUT / "rootfs"), "/usr/local/bin/regcred-refresher", "--version"],
        capture_output=True, text=True, timeout=30,
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith("regcred-refresher "), got.stdout
