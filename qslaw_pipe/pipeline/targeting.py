"""Which Linear layers get quantized: ordered name rules, first match wins.

A rule is (pattern, action): the pattern is an exact module name or `re:<regex>` matched against the
full name; the action is "quantize" or "skip". The default rules quantize every Linear inside the
language model's decoder blocks and skip everything else (vision tower, projector, embeddings, norms,
lm_head). The decoder-block prefix is found from the model's structure, never written down.
"""

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from qslaw_pipe.errors import QslawError

if TYPE_CHECKING:
    from torch import nn

ACTIONS = ("quantize", "skip")
Rule = tuple[str, str]


def default_rules(model: "nn.Module") -> list[Rule]:
    from qslaw_pipe.pipeline import modules

    prefix = modules.module_name(model, modules.decoder_layers(model))
    return [(f"re:^{re.escape(prefix)}\\.\\d+\\.", "quantize"), ("re:.*", "skip")]


def parse_rule(text: str) -> Rule:
    """'PATTERN=ACTION' from the command line."""
    pattern, sep, action = text.rpartition("=")
    if not sep or action not in ACTIONS:
        raise QslawError(
            f"bad targeting rule '{text}'", "write PATTERN=quantize or PATTERN=skip (PATTERN may be re:REGEX)"
        )
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as e:
            raise QslawError(
                f"bad regular expression in rule '{text}' ({e})", "fix the pattern after re:"
            ) from e
    return pattern, action


def _matches(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    return pattern == name


def resolve_targets(model: "nn.Module", rules: Sequence[Rule] | None = None) -> dict[str, dict]:
    """For every nn.Linear: {"action", "rule"}; user rules first, then the defaults."""
    from torch import nn

    ordered = list(rules or []) + default_rules(model)
    decisions = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        rule = next(r for r in ordered if _matches(r[0], name))
        decisions[name] = {
            "action": rule[1],
            "rule": f"{rule[0]}={rule[1]}",
            "shape": list(module.weight.shape),
        }
    unused = [r for r in rules or [] if not any(_matches(r[0], n) for n in decisions)]
    if unused:
        raise QslawError(
            f"targeting rule '{unused[0][0]}={unused[0][1]}' matches no Linear layer",
            "check the pattern against the layer names in a calibrate run's targets.json",
        )
    return decisions


def quantized_names(decisions: dict[str, dict]) -> list[str]:
    return [n for n, d in decisions.items() if d["action"] == "quantize"]
