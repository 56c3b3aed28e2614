"""Unit: the inspect stand-in (reconciler.lazystdlib) loads the real module on first use, and only then;
asyncio comes without ssl until something uses TLS, and TLS through asyncio still works.

Each case runs in a fresh interpreter (pytest has imported inspect long before us, and a process that has
it keeps its own). The AST check keeps the deferral worth having: dataclasses asks inspect for the
docstring of a class that has none, so every dataclass of ours has one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_the_package_does_not_load_inspect() -> None:
    out = _run("import sys, reconciler.model, reconciler.planner\n"
               "print(type(sys.modules['inspect']).__name__, 'ast' in sys.modules, 'dis' in sys.modules)")
    assert out == "_StandIn False False"


@pytest.mark.parametrize("use", [
    "import inspect; print(inspect.signature(lambda a, b=1: 0))",
    "from inspect import iscoroutinefunction; print(iscoroutinefunction(len) is False and '(a, b=1)')",
    "import dataclasses; print(dataclasses.inspect.signature(lambda a, b=1: 0))",
])
def test_first_use_loads_the_real_module(use: str) -> None:
    out = _run("import sys, reconciler\n" + use + "\n"
               "real = sys.modules['inspect']\n"
               "import dataclasses\n"
               "same = dataclasses.inspect.getsource is real.getsource\n"
               "print(type(real).__name__, same, 'ast' in sys.modules)")
    assert out.splitlines() == ["(a, b=1)", "module True True"]


def test_a_dataclass_without_docstring_still_gets_dataclasses_own() -> None:
    out = _run("import reconciler\nfrom dataclasses import dataclass\n"
               "@dataclass(frozen=True)\nclass P:\n    x: int\n    y: str = 'a'\n"
               "print(P.__doc__)")
    assert out == "P(x: int, y: str = 'a')"


def test_a_process_that_has_inspect_keeps_it() -> None:
    out = _run("import inspect, sys\nreal = inspect\nimport reconciler\n"
               "print(sys.modules['inspect'] is real)")
    assert out == "True"


SSL_DEFERRED = sys.version_info[:2] in ((3, 11), (3, 12))


@pytest.mark.skipif(not SSL_DEFERRED, reason="ssl is deferred on Python 3.11 and 3.12 only")
def test_asyncio_comes_without_ssl_and_a_unix_connection_does_not_load_it(tmp_path: Path) -> None:
    out = _run("import sys, reconciler, asyncio\n"
               "import asyncio as again\n"
               "async def main():\n"
               "    server = await asyncio.start_unix_server(lambda r, w: w.close(), path=sys.argv[1])\n"
               "    reader, writer = await asyncio.open_unix_connection(sys.argv[1])\n"
               "    await reader.read()\n"
               "    writer.close()\n"
               "    server.close()\n"
               "asyncio.run(main())\n"
               "print('ssl' in sys.modules, type(asyncio.sslproto.ssl).__name__,"
               " type(asyncio.base_events.ssl).__name__, asyncio.__spec__.name, again is asyncio)",
               str(tmp_path / "s"))
    assert out == "False _AsyncioSSL _AsyncioSSL asyncio True"


TLS = """
import sys, reconciler, asyncio
GET_SSL
cert, key = sys.argv[1], sys.argv[2]
async def main():
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=cert)
    async def echo(reader, writer):
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                   server_hostname="localhost")
    writer.write(b"hello\\n")
    answer = await reader.readline()
    writer.close()
    server.close()
    return answer
answer = asyncio.run(main())
real = sys.modules["ssl"]
print(answer, asyncio.sslproto.ssl is real, asyncio.base_events.ssl is real,
      asyncio.sslproto.SSLAgainErrors == (real.SSLWantReadError, real.SSLSyscallError))
"""


@pytest.mark.parametrize("get_ssl", ["import ssl", "ssl = asyncio.sslproto.ssl"],
                         ids=["imported-after-asyncio", "through-asyncio"])
def test_tls_through_asyncio_works(tmp_path: Path, get_ssl: str) -> None:
    """A TLS handshake over loopback (its first steps raise SSLWantReadError: sslproto's SSLAgainErrors)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    assert _run(TLS.replace("GET_SSL", get_ssl), str(cert), str(key)) == "b'HELLO\\n' True True True"


@pytest.mark.skipif(not SSL_DEFERRED, reason="ssl is deferred on Python 3.11 and 3.12 only")
def test_an_ssl_socket_is_still_refused_by_sock_methods() -> None:
    out = _run("import sys, reconciler, asyncio, socket, ssl\n"
               "sock = ssl.create_default_context().wrap_socket(socket.socket(),"
               " do_handshake_on_connect=False, server_hostname='x')\n"
               "async def main():\n"
               "    try:\n"
               "        await asyncio.get_running_loop().sock_connect(sock, ('127.0.0.1', 9))\n"
               "    except TypeError as err:\n"
               "        return str(err)\n"
               "print(asyncio.run(main()))\n"
               "sock.close()")
    assert out == "Socket cannot be of type SSLSocket"


def test_a_process_that_has_asyncio_or_ssl_keeps_them() -> None:
    out = _run("import ssl, sys\nimport reconciler, asyncio\nprint(asyncio.sslproto.ssl is ssl)")
    assert out == "True"
    out = _run("import asyncio, sys\nimport reconciler\nprint(type(asyncio.sslproto.ssl).__name__)")
    assert out == "module"


def test_every_dataclass_of_ours_has_a_docstring() -> None:
    missing = []
    for path in sorted((REPO / "reconciler").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.ClassDef) and ast.get_docstring(node) is None
                    and any("dataclass" in ast.unparse(d) for d in node.decorator_list)):
                missing.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert missing == []
