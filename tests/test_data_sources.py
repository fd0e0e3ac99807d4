"Every source kind through the config and `bigmodel-nb check-data`: one table with provenance, every row accounted for."
import http.server, json, sqlite3, threading
from pathlib import Path

import pandas as pd
import pytest

@pytest.fixture
def csv_server():
    "A private CSV address: it answers only requests with the header Authorization: Bearer tok-4711."
    body = "review,stars\n网上买的书很快就到了,pos\n客服态度很差,neg\n".encode("utf-8")
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.headers.get("Authorization") != "Bearer tok-4711":
                self.send_response(401); self.send_header("Content-Length", "0"); self.end_headers(); return
            self.send_response(200); self.send_header("Content-Type", "text/csv; charset=utf-8")
            self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
        def log_message(self, *args): pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/reviews.csv"
    httpd.shutdown(); httpd.server_close()

def test_all_source_kinds_become_one_table(cli, tmp_path, csv_server, monkeypatch):
    "Seven kinds of source, one table; the url source's token comes from the environment and is written nowhere."
    monkeypatch.setenv("REVIEWS_TOKEN", "tok-4711")
    texts = [f"第{i}条评论，这本书{'很好看' if i % 2 else '太无聊了'}，编号{i * 7919}" for i in range(40)]
    labels = ["pos" if i % 2 else "neg" for i in range(40)]
    frame = pd.DataFrame({"review": texts, "stars": labels})
    frame.iloc[:8].to_csv(tmp_path/"gbk.csv", index=False, encoding="gbk")
    frame.iloc[8:16].to_csv(tmp_path/"semicolon.csv", index=False, sep=";", encoding="utf-8-sig")
    frame.iloc[16:24].to_json(tmp_path/"lines.jsonl", orient="records", lines=True, force_ascii=False)
    frame.iloc[24:28].to_excel(tmp_path/"book.xlsx", index=False)
    for i in range(28, 34):
        folder = tmp_path/"folder"/labels[i]
        folder.mkdir(parents=True, exist_ok=True)
        (folder/f"{i}.txt").write_text(texts[i], encoding="utf-8")
    with sqlite3.connect(tmp_path/"reviews.db") as connection:
        frame.iloc[34:40].to_sql("reviews", connection, index=False)
    config = tmp_path/"config.yaml"
    config.write_text(f"""
data:
  text_column: review
  label_column: stars
  label_map: {{pos: 正面, neg: 负面}}
  labels: [负面, 正面]
  valid_fraction: 0.2
  test_fraction: 0.2
  sources:
    - path: {tmp_path/'gbk.csv'}
    - path: {tmp_path/'semicolon.csv'}
    - path: {tmp_path/'lines.jsonl'}
    - path: {tmp_path/'book.xlsx'}
    - path: {tmp_path/'folder'}
      text_column: text
      label_column: label
    - sql: SELECT review, stars FROM reviews
      database: sqlite:///{tmp_path/'reviews.db'}
    - url: {csv_server}
      headers: {{Authorization: "Bearer ${{REVIEWS_TOKEN}}"}}
""", encoding="utf-8")
    out = tmp_path/"out"
    result = cli("check-data", str(config), "--out", str(out), timeout=300)
    assert result.returncode == 0, result.stderr
    card = json.loads((out/"data"/"card.json").read_text())
    assert card["rows_read"] == 42 and card["rows_kept"] + card["rows_dropped"] == 42
    assert len(card["sources"]) == 7, card["sources"]
    assert card["label_names"] == ["负面", "正面"]
    kept = pd.concat(pd.read_parquet(out/"data"/f"{split}.parquet") for split in ("train", "valid", "test"))
    assert len(kept) == card["rows_kept"] and set(kept["label"]) == {0, 1}
    assert "编号[" not in " ".join(kept["text"])  # order numbers are not mistaken for PII
    assert set(kept["source"]) <= set(card["sources"]) and kept["source_row"].notna().all()  # provenance stays with each text
    assert kept["source"].notna().all() and kept["source"].nunique() >= 5
    for path in out.rglob("*"):
        assert not path.is_file() or b"tok-4711" not in path.read_bytes(), f"the token was written to {path}"
    assert "tok-4711" not in result.stdout + result.stderr
    monkeypatch.delenv("REVIEWS_TOKEN")
    missing = cli("check-data", str(config), "--out", str(tmp_path/"again"), timeout=300)
    assert missing.returncode == 1 and "needs the environment variable REVIEWS_TOKEN, which is not set" in missing.stderr, missing.stderr

def test_sensitive_column_reaches_the_splits_and_leaves_the_split_alone(tmp_path):
    "data.sensitive_column is kept as `sensitive` in every split for the fairness audit; the split itself does not change."
    from bigmodel_nb.config import load_config
    from bigmodel_nb.core import UserError
    from bigmodel_nb.data import prepare_data
    frame = pd.DataFrame({"text": [f"第{i}条评论，{'很好看' if i % 2 else '太无聊了'}，编号{i * 7919}" for i in range(200)],
                          "label": ["pos" if i % 2 else "neg" for i in range(200)],
                          "gender": ["女" if i % 3 else "男" for i in range(200)]})
    frame.to_csv(tmp_path/"reviews.csv", index=False)
    base = [f"data.sources=[{{path: {tmp_path/'reviews.csv'}}}]", "data.clean.near_duplicates.enabled=false"]
    with_column, _, card = prepare_data(load_config(None, base + ["data.sensitive_column=gender"]).data, 42)
    without, _, plain_card = prepare_data(load_config(None, base).data, 42)
    for name, split in with_column.items():
        assert list(split.columns) == ["text", "source", "source_row", "sensitive", "label"]
        row = split["text"].str.extract(r"编号(\d+)")[0].astype(int) // 7919  # cleaning normalizes the texts: find the row by number
        assert (split["sensitive"].to_numpy() == frame["gender"].to_numpy()[row]).all(), name
        assert split[["text", "label"]].equals(without[name][["text", "label"]])
    assert card["fingerprint"] == plain_card["fingerprint"]
    with pytest.raises(UserError, match="sex"):
        prepare_data(load_config(None, base + ["data.sensitive_column=sex"]).data, 42)
