#!/usr/bin/env python3
"""Writes the appliance image's SBOM (SPDX 2.3, JSON): every Debian package in the image with
its pinned version and the SHA-256 of its .deb, and every crate compiled into `custos` with its
version, license and the checksum Cargo.lock pins. Deterministic: the same inputs give the same
bytes (the creation time is SOURCE_DATE_EPOCH)."""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import tomllib


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def spdx_id(kind, name, version):
    return "SPDXRef-%s-%s" % (kind, re.sub(r"[^A-Za-z0-9.-]", "-", "%s-%s" % (name, version)))


def license_expr(raw):
    raw = raw.strip()
    if not raw:
        return "NOASSERTION"
    # Old crates write "MIT/Apache-2.0" for "MIT OR Apache-2.0".
    return " OR ".join(part.strip() for part in raw.split("/"))


def main():
    ap = argparse.ArgumentParser()
    for a in ("--version", "--lock", "--debs", "--cargo-lock", "--tree", "--binary", "--out"):
        ap.add_argument(a, required=True)
    args = ap.parse_args()
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))

    debs = {}
    for name in sorted(os.listdir(args.debs)):
        path = os.path.join(args.debs, name)
        fields = subprocess.run(["dpkg-deb", "-f", path, "Package", "Version", "Architecture"],
                                check=True, capture_output=True, text=True).stdout
        info = dict(line.split(": ", 1) for line in fields.splitlines())
        debs[info["Package"]] = (info["Version"], info["Architecture"], sha256(path))
    pinned = []
    with open(args.lock) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                pinned.append(line.split())
    for name, version in pinned:
        if name not in debs or debs[name][0] != version:
            sys.exit("sbom.py: %s %s is pinned but %s was downloaded" % (name, version, debs.get(name)))

    with open(args.cargo_lock, "rb") as f:
        checksums = {(p["name"], p["version"]): p.get("checksum")
                     for p in tomllib.load(f)["package"]}
    crates = []
    with open(args.tree) as f:
        for line in f:
            spec, _, lic = line.rstrip("\n").partition("|")
            name, version = spec.split(" ")[:2]
            crates.append((name, version.lstrip("v"), license_expr(lic)))

    image_id = "SPDXRef-custos-image"
    packages = [{
        "SPDXID": image_id,
        "name": "custos-appliance-image",
        "versionInfo": args.version,
        "supplier": "Organization: Custos",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
    }]
    rels = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
             "relatedSpdxElement": image_id}]
    for name, (version, arch, digest) in sorted(debs.items()):
        pid = spdx_id("deb", name, version)
        packages.append({
            "SPDXID": pid,
            "name": name,
            "versionInfo": version,
            "supplier": "Organization: Debian",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "checksums": [{"algorithm": "SHA256", "checksumValue": digest}],
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": "pkg:deb/debian/%s@%s?arch=%s&distro=bookworm" % (name, version, arch),
            }],
        })
        rels.append({"spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": pid})
    binary_id = None
    for name, version, lic in sorted(crates):
        pid = spdx_id("crate", name, version)
        pkg = {
            "SPDXID": pid,
            "name": name,
            "versionInfo": version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": lic,
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": "pkg:cargo/%s@%s" % (name, version),
            }],
        }
        digest = checksums.get((name, version))
        if digest:
            pkg["checksums"] = [{"algorithm": "SHA256", "checksumValue": digest}]
        if name == "custos":
            binary_id = pid
            pkg["supplier"] = "Organization: Custos"
            pkg["checksums"] = [{"algorithm": "SHA256", "checksumValue": sha256(args.binary)}]
        packages.append(pkg)
        rels.append({"spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": pid})
    if binary_id is None:
        sys.exit("sbom.py: the crate list does not name custos itself")

    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": "custos-%s-image" % args.version,
        "documentNamespace": "https://custos.invalid/spdx/custos-image-%s-%s" % (
            args.version, hashlib.sha256(json.dumps([sorted(debs.items()), crates]).encode()).hexdigest()[:16]),
        "creationInfo": {"created": created, "creators": ["Tool: custos image/sbom.py"]},
        "packages": packages,
        "relationships": rels,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    print("SBOM: %d Debian packages, %d crates" % (len(debs), len(crates)))


if __name__ == "__main__":
    main()
