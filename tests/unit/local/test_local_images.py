"""Image names → host commands."""

from pathlib import Path

import pytest

from zeromesh.local.images import ImageMissing, default_table, expand, image_key, parse_table, resolve_command


@pytest.mark.parametrize("image,key", [
    ("imeshai/echoserver", "imeshai/echoserver"),
    ("imeshai/echoserver:1.2", "imeshai/echoserver"),
    ("docker.io/imeshai/echoserver:latest", "imeshai/echoserver"),
    ("registry.example:5000/team/app@sha256:abc", "team/app"),
    ("localhost/app:dev", "app"),
    ("nginx", "nginx"),
    ("library/nginx:1.25", "nginx"),
    ("docker.io/library/nginx", "nginx"),
    ("Foo/Bar", "foo/bar"),
])
def test_image_key(image: str, key: str) -> None:
    assert image_key(image) == key


def test_command_wins_and_args_append() -> None:
    argv, env = resolve_command({"image": "curlimages/curl", "command": ["/bin/sleep"],
                                 "args": ["infinity"]}, {}, Path("/s"), "/usr/bin/python3")
    assert argv == ["/bin/sleep", "infinity"] and env == {}


def test_sample_from_table() -> None:
    table = parse_table("images:\n  imeshai/echoserver: {sample: http-echo}\n", "t.yaml")
    argv, _ = resolve_command({"image": "docker.io/imeshai/echoserver:v1"}, table,
                              Path("/s"), "/usr/bin/python3")
    assert argv == ["/usr/bin/python3", "/s/http_echo.py"]


def test_command_entry_with_container_args_replacing_entry_args() -> None:
    table = parse_table("a/b:\n  command: [/bin/echo]\n  args: [x]\n  env: {K: v}\n", "t")
    assert resolve_command({"image": "a/b"}, table, Path("/s"), "py") == (["/bin/echo", "x"],
                                                                          {"K": "v"})
    assert resolve_command({"image": "a/b", "args": ["y"]}, table, Path("/s"), "py")[0] == \
        ["/bin/echo", "y"]


def test_missing_image_explains() -> None:
    r = resolve_command({"image": "imeshai/echoserver"}, {}, Path("/s"), "py")
    assert isinstance(r, ImageMissing) and r.reason == "ImageNotInTable"
    assert "imeshai/echoserver" in r.message and "--image-table" in r.message


@pytest.mark.parametrize("text,msg", [
    ("- a\n", "expected a mapping"),
    ("a/b: 3\n", "images.a/b: expected a sample name"),
    ("a/b: {sample: nope}\n", "unknown sample 'nope'"),
    ("a/b: {sample: http-echo, command: [x]}\n", "exactly one of"),
    ("a/b: {}\n", "exactly one of"),
    ("a/b: {command: x}\n", "a/b.command: expected a list of strings"),
    ("a/b: {command: [x], bogus: 1}\n", "unknown field(s) bogus"),
    ("a: [\n", "invalid YAML"),
])
def test_bad_tables_name_the_entry(text: str, msg: str) -> None:
    with pytest.raises(ValueError, match=r"t\.yaml") as e:
        parse_table(text, "t.yaml")
    assert msg in str(e.value)


def test_default_table_ships_the_samples_but_not_the_demo_image() -> None:
    t = default_table()
    assert t["zeromesh/http-echo"] == {"sample": "http-echo"}
    assert "imeshai/echoserver" not in t


def test_expand() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)-$(C)-$$(A)", env) == "1-two-$(C)-$(A)"
