"""Generated pod names look like Kubernetes' and stay valid labels."""

import random
import re

from zeromesh.local.naming import ALPHANUMS, pod_name, random_suffix, safe_encode, template_hash

LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_template_hash_is_stable_and_sensitive() -> None:
    t = {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c"}]}}
    same = {"spec": {"containers": [{"name": "c"}]}, "metadata": {"labels": {"app": "x"}}}
    assert template_hash(t) == template_hash(same)
    other = {"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "c"}]}}
    assert template_hash(t) != template_hash(other)
    assert set(template_hash(t)) <= set(ALPHANUMS)


def test_safe_encode_uses_only_safe_characters() -> None:
    assert set(safe_encode("0123456789")) <= set(ALPHANUMS)


def test_pod_name_shape_and_length() -> None:
    rng = random.Random(1)
    name = pod_name("echo", "7d9f8c6b5", random_suffix(rng))
    assert re.match(r"^echo-7d9f8c6b5-[a-z0-9]{5}$", name)
    long = pod_name("d" * 70, "7d9f8c6b5", "abcde")
    assert len(long) <= 63 and long.endswith("abcde") and LABEL.match(long)
