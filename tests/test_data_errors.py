"Bad input through `bigmodel-nb check-data`: a clear one-line error naming the file and row or field, a non-zero exit, no traceback."
import http.server, threading, time
from pathlib import Path

import pandas as pd
import pytest

def write_config(folder: Path, source: str, extra: str = "") -> Path:
    config = folder/"config.yaml"
    config.write_text(f"data:\n  sources:\n    - {source}\n{extra}", encoding="utf-8")
    return config

def check_fails(cli, config: Path, *expected: str):
    result = cli("check-data", str(config), "--set", "data.clean.near_duplicates.enabled=false", timeout=300)
    message = result.stderr
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in message + result.stdout, message
    for text in expected: assert text in message, f"{text!r} not in {message!r}"
    return message

def test_missing_file(cli, tmp_path):
    check_fails(cli, write_config(tmp_path, f"path: {tmp_path/'nope.csv'}"), "nope.csv", "not found")

def test_unknown_format(cli, tmp_path):
    (tmp_path/"data.xml").write_text("<x/>")
    check_fails(cli, write_config(tmp_path, f"path: {tmp_path/'data.xml'}"), "data.xml", ".xml")

def test_missing_label_column_lists_columns(cli, tmp_path):
    pd.DataFrame({"text": ["好", "差"], "score": ["1", "0"]}).to_csv(tmp_path/"a.csv", index=False)
    check_fails(cli, write_config(tmp_path, f"path: {tmp_path/'a.csv'}"), "a.csv", "label column 'label' not found", "columns are: text, score")

def test_empty_file(cli, tmp_path):
    (tmp_path/"empty.csv").write_text("")
    check_fails(cli, write_config(tmp_path, f"path: {tmp_path/'empty.csv'}"), "empty.csv", "empty")

def test_ragged_rows_name_lines(cli, tmp_path):
    (tmp_path/"ragged.csv").write_text("text,label\n好,1\n差,0,extra\n很好,1\n一般,0,x,y\n", encoding="utf-8")
    check_fails(cli, write_config(tmp_path, f"path: {tmp_path/'ragged.csv'}"), "ragged.csv", "3", "on_bad_lines")

def test_undecodable_bytes(cli, tmp_path):
    (tmp_path/"bad.csv").write_bytes("text,label\n好,1\n".encode("utf-8") + b"\xff\xfe\xfa\x80bad,0\n")
    check_fails(cli, write_config(tmp_path, f"path: {tmp_path/'bad.csv'}\n      encoding: utf-8"), "bad.csv", "line 3")

def test_missing_labels_name_rows(cli, tmp_path):
    pd.DataFrame({"text": ["好", "差", "很好"], "label": ["1", None, "1"]}).to_csv(tmp_path/"nan.csv", index=False)
    check_fails(cli, write_config(tmp_path, f"path: {tmp_path/'nan.csv'}"), "nan.csv", "row 3", "no label")

def test_numeric_text_column(cli, tmp_path):
    pd.DataFrame({"text": ["1.5", "2", "3"], "label": ["1", "0", "1"]}).to_csv(tmp_path/"num.csv", index=False)
    check_fails(cli, write_config(tmp_path, f"path: {tmp_path/'num.csv'}"), "num.csv", "text column 'text'", "numbers")

def test_huge_field(cli, tmp_path):
    with open(tmp_path/"huge.csv", "w", encoding="utf-8") as handle:
        handle.write("text,label\n好,1\n")
        handle.write("差" * (50 * 1024 * 1024 // 3) + ",0\n")
    check_fails(cli, write_config(tmp_path, f"path: {tmp_path/'huge.csv'}"), "huge.csv", "line 3")

def test_sql_error(cli, tmp_path):
    check_fails(cli, write_config(tmp_path, "sql: SELEC text FROM nowhere"), "SELEC")

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/slow"): time.sleep(2)
        if self.path.startswith("/error") or self.path.startswith("/slow"):
            self.send_response(500); self.end_headers(); return
    def log_message(self, *args): pass

@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown(); httpd.server_close()

def test_url_500(cli, tmp_path, server):
    check_fails(cli, write_config(tmp_path, f"url: {server}/error.csv\n      retries: 2"), "/error.csv", "500")

def test_url_timeout(cli, tmp_path, server):
    check_fails(cli, write_config(tmp_path, f"url: {server}/slow.csv\n      retries: 1\n      timeout: 0.3"), "/slow.csv", "time")
