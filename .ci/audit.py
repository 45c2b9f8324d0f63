"""`make audit`: known vulnerabilities in the installed dependencies (pip-audit, PyPI's advisories).

Fails on a vulnerability that is not justified in IGNORED below. Where the advisory data cannot be
reached (a machine with a package mirror but no PyPI JSON API), pip-audit skips every package or
gives no report; this says so, and does not pass that off as "no known vulnerabilities".
"""

from __future__ import annotations

import json
import subprocess
import sys

IGNORED: dict[str, str] = {
    # "GHSA-xxxx-xxxx-xxxx": "why it does not apply to Retro-PEFT",
}


def main() -> int:
    """Run pip-audit on this interpreter's environment; print a summary; the exit code."""
    args = [
        sys.executable,
        "-m",
        "pip_audit",
        "--format",
        "json",
        "--progress-spinner",
        "off",
        "--skip-editable",
    ]
    args += [f"--ignore-vuln={vuln}" for vuln in IGNORED]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:  # pip-audit itself failed (no advisory service reachable, say)
        print(f"audit: not run: pip-audit gave no report:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return 0
    packages = report.get("dependencies", [])
    skipped = [p for p in packages if p.get("skip_reason")]
    found = [
        (p["name"], p["version"], v["id"], v.get("fix_versions"))
        for p in packages
        for v in p.get("vulns", [])
    ]
    if packages and len(skipped) == len(packages):
        print(
            f"audit: not run: PyPI's advisory data could not be reached for any of the {len(packages)} "
            f"installed packages ({skipped[0]['skip_reason']})"
        )
        return 0
    for name, version, vuln, fixed in found:
        print(f"{name} {version}: {vuln} (fixed in {', '.join(fixed or []) or 'no release yet'})")
    audited = len(packages) - len(skipped)
    print(
        f"audit: {audited} packages audited, {len(skipped)} not found in the advisory data, "
        f"{len(found)} known vulnerabilities"
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
