#!/usr/bin/python3
# Parses an OpenMetrics 1.0.0 exposition (standard input) with the OpenMetrics parser of the Prometheus Python client
# (Debian's python3-prometheus-client), which rejects what the specification forbids, and prints every family as
# JSON: name, type and samples (name, labels, value). Exit status 2 and the parser's message on a parse error.
import json
import math
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

text = sys.stdin.read()
try:
    families = list(text_string_to_metric_families(text))
except Exception as error:  # the parser raises ValueError and others for invalid input
    sys.stderr.write("invalid OpenMetrics: %s\n" % error)
    sys.exit(2)

out = []
for family in families:
    samples = []
    for sample in family.samples:
        value = sample.value
        samples.append([sample.name, sample.labels, None if math.isnan(value) else (str(value) if math.isinf(value) else value)])
    out.append({"name": family.name, "type": family.type, "samples": samples})
json.dump(out, sys.stdout)
