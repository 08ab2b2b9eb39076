#!/usr/bin/env python3
"""Writes charts/aitbc/values.schema.json (the strict schema of the chart's values).

Edit this file, not the JSON: `python3 ci/gen-values-schema.py`; `make chart-check` fails when
the committed schema differs from what this writes.
"""
import json
import os
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "charts", "aitbc", "values.schema.json")
def obj(props, required=None, extra=False):
    d = {"type": "object", "additionalProperties": extra, "properties": props}
    if required: d["required"] = required
    return d
S = lambda **k: dict(type="string", **k)
B = {"type": "boolean"}
quantity = {"anyOf": [{"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"}, {"type": "number", "minimum": 0}]}
resources = obj({
    "requests": {"type": "object", "additionalProperties": quantity},
    "limits": {"type": "object", "additionalProperties": quantity},
}, required=["requests", "limits"])
hexkey = {"type": "string", "pattern": "^([0-9a-fA-F]{64})?$"}
strmap = {"type": "object", "additionalProperties": {"type": "string"}}
envlist = {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {"name": S(minLength=1)}}}
tolerations = {"type": "array", "items": {"type": "object", "properties": {
    "key": S(), "operator": S(enum=["Exists", "Equal"]), "value": S(),
    "effect": S(enum=["", "NoSchedule", "PreferNoSchedule", "NoExecute"]),
    "tolerationSeconds": {"type": "integer"}}, "additionalProperties": False}}
repo = obj({"repository": S(minLength=1, pattern=r"^[a-z0-9][a-z0-9._/-]*$")}, required=["repository"])
dns = S(pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$", maxLength=52)
schema = {
  "$schema": "https://json-schema.org/draft-07/schema#",
  "title": "aitbc chart values",
  "type": "object",
  "additionalProperties": False,
  "properties": {
    "global": {"type": "object"},
    "nameOverride": dns,
    "fullnameOverride": dns,
    "chainId": S(pattern=r"^([a-z0-9][-a-z0-9]{0,62})?$"),
    "image": obj({
        "registry": S(minLength=1),
        "tag": S(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$|^$"),
        "pullPolicy": S(enum=["Always", "IfNotPresent", "Never"]),
        "pullSecrets": {"type": "array", "items": {"type": "string", "minLength": 1}},
    }, required=["registry", "tag", "pullPolicy"]),
    "commonLabels": strmap,
    "watchNamespaces": {"type": "array", "uniqueItems": True,
                        "items": S(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", maxLength=63)},
    "rbac": obj({"userRoles": B}),
    "scheduler": obj({
        "publicKey": hexkey,
        "existingSecret": dns,
        "publicKeySecretKey": S(minLength=1),
    }),
    "operator": obj({
        "enabled": B,
        "image": repo,
        "replicas": {"type": "integer", "minimum": 0, "maximum": 5},
        "leaderElection": B,
        "logFormat": S(enum=["json", "text"]),
        "logLevel": S(minLength=1),
        "extraArgs": {"type": "array", "items": {"type": "string"}},
        "extraEnv": envlist,
        "resources": resources,
        "serviceAccount": obj({"create": B, "name": dns, "annotations": strmap}),
        "podAnnotations": strmap,
        "podLabels": strmap,
        "nodeSelector": strmap,
        "tolerations": tolerations,
        "affinity": {"type": "object"},
        "priorityClassName": S(),
        "service": obj({"type": S(enum=["ClusterIP", "NodePort", "LoadBalancer"]),
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535}}),
    }, required=["enabled", "image", "resources"]),
    "metrics": obj({"serviceMonitor": obj({
        "enabled": B,
        "interval": S(pattern=r"^[0-9]+(ms|s|m|h)$"),
        "scrapeTimeout": S(pattern=r"^[0-9]+(ms|s|m|h)$"),
        "labels": strmap})}),
    "gpuAgent": obj({
        "enabled": B,
        "image": repo,
        "owner": S(pattern=r"^(ait[0-9a-fA-F]{48})?$"),
        "isolation": S(enum=["auto", "sandbox", "pod", "process"]),
        "serves": {"anyOf": [S(enum=["any"]), {"type": "array", "uniqueItems": True, "items": S(pattern=r"^ait[0-9a-fA-F]{48}$")}]},
        "jobs": obj({
            "namespace": S(pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$", maxLength=63),
            "createNamespace": B,
            "runtimeClassName": S(pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$", maxLength=253),
            "demoImage": S(),
            "cpuLimit": quantity,
            "memoryLimit": quantity,
        }),
        "key": obj({"existingSecret": dns, "secretKey": S(minLength=1)}),
        "stateDir": obj({"type": S(enum=["hostPath", "emptyDir"]),
                         "hostPath": S(pattern=r"^/.+"),
                         "fixPermissions": B}, required=["type"]),
        "simulated": obj({"enabled": B,
                          "gpus": {"type": "integer", "minimum": 1, "maximum": 64},
                          "memoryMiB": {"type": "integer", "minimum": 1},
                          "model": S(minLength=1)}, required=["enabled"]),
        "gpuRequest": {"type": "integer", "minimum": 0, "maximum": 64},
        "visibleDevicesAll": B,
        "runtimeClassName": S(),
        "sampleIntervalSecs": {"type": "integer", "minimum": 1, "maximum": 3600},
        "jobRetentionHours": {"type": "integer", "minimum": 1},
        "defaultTimeLimitSecs": {"type": "integer", "minimum": 1},
        "extraArgs": {"type": "array", "items": {"type": "string"}},
        "extraEnv": envlist,
        "nodeSelector": strmap,
        "tolerations": tolerations,
        "affinity": {"type": "object"},
        "priorityClassName": S(),
        "podAnnotations": strmap,
        "podLabels": strmap,
        "resources": resources,
        "updateStrategy": obj({"maxUnavailable": {"anyOf": [{"type": "integer", "minimum": 1}, S(pattern=r"^[0-9]+%$")]}}),
        "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
        "networkPolicy": obj({"enabled": B, "metricsFrom": {"type": "array", "items": {"type": "object"}}}),
    }, required=["enabled", "image", "simulated", "stateDir", "resources"]),
    "chain": obj({
        "create": B,
        "name": dns,
        "chainId": S(pattern=r"^([a-z0-9][-a-z0-9]{0,62})?$"),
        "validators": {"type": "integer", "minimum": 1, "maximum": 64},
        "replicas": {"type": ["integer", "null"], "minimum": 1, "maximum": 128},
        "genesis": {"type": "object"},
        "blockTimeMs": {"type": "integer", "minimum": 50, "maximum": 60000},
        "image": repo,
        "storage": obj({"size": S(pattern=r"^[0-9]+(Mi|Gi|Ti)$"), "storageClassName": S()}, required=["size"]),
        "resources": resources,
        "networkPolicy": obj({"enabled": B}, required=["enabled"]),
        "extraSpec": {"type": "object"},
    }, required=["create"]),
  },
  "required": ["image", "operator", "gpuAgent", "chain", "scheduler"],
}
TEXT = json.dumps(schema, indent=2) + "\n"

if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if open(OUT).read() == TEXT else 1)
    with open(OUT, "w") as f:
        f.write(TEXT)
