"""Renders charts/xdp-speaker with real Helm (helm-python-sdk, Helm v4 as a
library) and prints every manifest as one multi-document YAML stream, in a
stable order (by template file name).

    render.py --release lb --namespace lb-system [--values-json '{...}']
              [--apiserver URL --token T --ca-file F --upgrade]

With --apiserver, Helm talks to that API server (its `lookup` reads live
objects: an upgrade keeps the memberlist key of the Secret it finds there).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import helm_python as helm

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "xdp-speaker"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--values-json", default="{}")
    parser.add_argument("--apiserver")
    parser.add_argument("--token")
    parser.add_argument("--ca-file")
    parser.add_argument("--upgrade", action="store_true")
    args = parser.parse_args()
    values = json.loads(args.values_json)
    chart = helm.Chart.load(CHART_DIR)
    try:
        kind = {"is_upgrade": True} if args.upgrade else {"is_install": True}
        if args.apiserver:
            with helm.Config(
                kube_apiserver=args.apiserver,
                kube_token=args.token,
                kube_ca_file=args.ca_file,
                namespace=args.namespace,
            ) as config:
                rendered = config.render(chart, values, name=args.release, namespace=args.namespace, **kind)
        else:
            rendered = chart.render(values, name=args.release, namespace=args.namespace, **kind)
    except helm.HelmError as error:
        print(f"render.py: {error}".replace("\n", " "), file=sys.stderr)
        return 1
    finally:
        chart.close()
    for name in sorted(rendered):
        text = rendered[name].strip()
        if name.endswith("NOTES.txt") or not text:
            continue
        print(f"---\n# Source: {name}\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
