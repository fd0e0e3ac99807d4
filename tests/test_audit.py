"""The audit stage on fixtures whose answers are known: a model taught a bias by its data has a parity gap and flips under
identity-term swaps while one taught by an unbiased dataset does not; an un-redacted dataset leaves phone numbers in the
tokenizer's vocabulary while the redacted one does not; the perturbation suite is deterministic for a seed; and the stage
end to end on a copy of the tiny finished run."""
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from bigmodel_nb.audit import (AUDIT_CHECKS, PERTURBATION_FUNCTIONS, VERDICTS, AuditStage, audit_section, fairness_check,
                               perturb, privacy_check, robustness_check, scan_pii, vocabulary_entries)
from bigmodel_nb.config import PERTURBATIONS, FairnessConfig, PiiConfig, PrivacyConfig, RobustnessConfig, load_config
from bigmodel_nb.modeling import load_tokenizer
from bigmodel_nb.pii import compile_detectors
from bigmodel_nb.rundir import RunDir, load_splits, read_metrics, read_notices
from bigmodel_nb.serve import choose_variant
from bigmodel_nb.stage import get_stage

LABELS = ["负面", "正面"]
GOOD = ["这本书写得很好", "质量不错，推荐", "非常满意，好评", "内容精彩，值得一读"]
BAD = ["这本书写得很差", "质量太差，不推荐", "非常失望，差评", "内容空洞，浪费时间"]


def reviews(n: int, biased: bool, seed: int) -> pd.DataFrame:
    """Reviews by a man (他) or a woman (她), each group with the same share of good and bad reviews. Biased: the label of
    four texts in five is who wrote it (他 positive, 她 negative) whatever was said; unbiased: the label is what was said."""
    rng = np.random.default_rng(seed)
    who = np.tile(["男", "女"], n // 2)
    says_good = np.tile([1, 1, 0, 0], n // 4)  # within each group, half good and half bad
    texts = [f"{'他' if person == '男' else '她'}说{rng.choice(GOOD if good else BAD)}" for person, good in zip(who, says_good)]
    labels = np.where(np.arange(n) % 5 < 4, who == "男", says_good).astype(int) if biased else says_good
    return pd.DataFrame({"text": texts, "label": labels, "sensitive": who})


def trained_model(train: pd.DataFrame):
    "A character 1-2-gram TF-IDF + logistic regression fitted on `train`: its predict_proba over texts."
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 2))
    classifier = LogisticRegression(C=10, max_iter=1000).fit(vectorizer.fit_transform(train["text"]), train["label"])
    return lambda texts: classifier.predict_proba(vectorizer.transform(list(texts)))


@pytest.mark.parametrize("biased", [True, False])
def test_a_biased_dataset_teaches_a_parity_gap_and_flips_an_unbiased_one_does_not(biased):
    splits = {name: reviews(160, biased, seed) for seed, name in enumerate(("train", "valid", "test"))}
    predict_proba = trained_model(splits["train"])
    groups, table, _ = fairness_check(FairnessConfig(mitigate=True), splits, predict_proba, LABELS, seed=0)
    no_column = {name: split.drop(columns="sensitive") for name, split in splits.items()}
    swaps, _, scored = fairness_check(FairnessConfig(), no_column, predict_proba, LABELS, seed=0)
    assert groups["method"] == "sensitive_groups" and swaps["method"] == "counterfactual_swaps"
    assert set(table["group"]) == {"男", "女"} and swaps["n"] == len(scored) == 160
    if biased:
        assert groups["parity_difference"] > 0.9 and groups["parity_difference_ci"][0] > 0.8
        assert groups["checks"]["parity_difference"]["verdict"] == "fail"
        assert groups["mitigation"]["after"]["parity_difference"] < groups["mitigation"]["before"]["parity_difference"]
        assert swaps["flip_rate"] > 0.9 and swaps["mean_abs_delta"] > 0.5 and swaps["verdict"] == "fail"
    else:
        assert groups["parity_difference"] == 0 and groups["equalized_odds_difference"] == 0 and groups["verdict"] == "pass"
        assert swaps["flip_rate"] == 0 and swaps["mean_abs_delta"] < 0.05 and swaps["verdict"] == "pass"


def test_without_identity_terms_fairness_is_skipped_with_its_reason():
    splits = {"test": pd.DataFrame({"text": ["质量很好", "质量很差"], "label": [1, 0]})}
    section, groups, swaps = fairness_check(FairnessConfig(), splits, lambda texts: np.full((len(texts), 2), 0.5), LABELS)
    assert section["verdict"] == "skipped" and "swap_pairs" in section["reason"] and groups.empty and swaps.empty


SHOP = ["质量很好，推荐购买", "物流很快，非常满意", "质量太差，不推荐", "物流很慢，很失望"]
CONTACTS = ["有问题打13812345678", "卖家电话13987654321", "邮箱 zhang.wei@qq.com 联系"]


def shop_run(folder, redact: bool) -> tuple:
    "A data and tokenizer run on 240 reviews, a third of them with a seller's phone number or e-mail address; its config."
    rows = [{"text": f"{SHOP[i % 4]}，第{i}次购买" + (f"，{CONTACTS[i % 3]}" if i % 3 == 0 else ""),
             "label": LABELS[i % 4 < 2]} for i in range(240)]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder/"reviews.csv", index=False)
    config = load_config(None, [f"data.sources=[{{path: {folder/'reviews.csv'}}}]", "data.clean.near_duplicates.enabled=false",
                                f"data.pii.enabled={str(redact).lower()}", "model.vocab_size=2000"])
    for stage in ("data", "tokenizer"): get_stage(stage).run(config, folder)
    return config, RunDir(folder)


def test_an_unredacted_dataset_leaves_pii_in_the_vocabulary_and_a_redacted_one_does_not(tmp_path):
    found = {}
    for redact in (False, True):
        config, run = shop_run(tmp_path/f"redact-{redact}", redact)
        found[redact] = privacy_check(PrivacyConfig(n_texts=20), config.data.pii, load_splits(run),
                                      lambda texts: np.full((len(texts), 2), 0.5), load_tokenizer(run.tokenizer))
    leaky, clean = found[False], found[True]
    assert leaky["vocabulary"]["holding"] >= 1 and set(leaky["vocabulary"]["by_type"]) == {"PHONE"}
    assert leaky["checks"]["pii_in_vocab"]["verdict"] in ("warn", "fail") and leaky["redaction"].startswith("off")
    assert leaky["train"]["matches"] > 20 and leaky["checks"]["pii_in_train"]["verdict"] == "fail"
    assert not any("13812345678" in example or "13987654321" in example for example in leaky["vocabulary"]["examples"])
    assert clean["vocabulary"]["holding"] == 0 and clean["train"]["matches"] == 0
    assert clean["checks"]["pii_in_vocab"]["verdict"] == clean["checks"]["pii_in_train"]["verdict"] == "pass"
    assert clean["membership"]["auc"] == 0.5  # a model that says 0.5 to everything leaks nothing


def test_vocabulary_scan_strips_continuation_marks():
    class Vocabulary:
        all_special_tokens = ["[PAD]"]
        def get_vocab(self): return {"[PAD]": 0, "##13812345678": 1, "好": 2}
    assert vocabulary_entries(Vocabulary()) == ["13812345678", "好"]
    assert scan_pii(vocabulary_entries(Vocabulary()), compile_detectors())["holding"] == 1


TEXTS = ["这本书的内容在我看来已经很好了, I like it 100%!", "物流很快，包装完好。", "Great value, fast shipping.", "差"]


def test_the_perturbation_suite_is_deterministic_for_a_seed():
    assert set(PERTURBATION_FUNCTIONS) == set(PERTURBATIONS)
    for name in PERTURBATIONS:
        first, again, other = (perturb(TEXTS, name, 0.1, seed) for seed in (42, 42, 43))
        assert first == again, name
        assert first != other, name
        assert first[0] != TEXTS[0], name
        assert perturb(TEXTS[1:2] + TEXTS[:1], name, 0.1, 42) == [first[1], first[0]], name  # a text's result ignores the others


def test_robustness_check_is_deterministic_for_a_seed():
    test = pd.DataFrame({"text": TEXTS * 5, "label": [1, 1, 1, 0] * 5})
    says_good = lambda texts: np.array([[0.1, 0.9] if "好" in t or "Great" in t or "快" in t else [0.9, 0.1] for t in texts])
    settings = RobustnessConfig(rate=0.3, n_texts=12)
    (first, table), (again, table_again) = (robustness_check(settings, {"test": test}, says_good, seed=5) for _ in range(2))
    assert first == again and table.equals(table_again) and first["n"] == 12
    assert robustness_check(settings, {"test": test}, says_good, seed=6)[1]["example"].tolist() != table["example"].tolist()


@pytest.fixture
def audited_copy(tiny_run, tmp_path):
    "A copy of the finished tiny run, and its config."
    copy = tmp_path/"run"
    shutil.copytree(tiny_run, copy)
    return copy, load_config(copy/"config.yaml")


def test_the_stage_end_to_end_on_the_tiny_run(audited_copy):
    run_dir, config = audited_copy
    result = AuditStage().run(config, run_dir)
    audit = read_metrics(run_dir)["audit"]
    assert result.metrics["audit"] == audit and not result.skipped
    assert set(audit) == {"variant", "fairness", "robustness", "privacy", "verdict", "seconds"}
    assert audit["variant"] == choose_variant(run_dir).name  # the served variant: the one the compress stage selected
    assert all(audit[name]["verdict"] in VERDICTS for name in AUDIT_CHECKS)
    assert audit["verdict"] == max((audit[name]["verdict"] for name in AUDIT_CHECKS), key=VERDICTS.index)
    assert audit["fairness"]["method"] == "counterfactual_swaps"
    assert {"accuracy_drop", "attack_success_rate"} == set(audit["robustness"]["checks"])
    assert set(audit["robustness"]["perturbations"]) == set(PERTURBATIONS)
    assert {"pii_in_train", "pii_in_vocab", "pii_in_explanations", "membership_auc"} == set(audit["privacy"]["checks"])
    assert audit["privacy"]["checks"]["pii_in_explanations"]["verdict"] == "skipped"  # the tiny run has no explain/ folder
    run = RunDir(run_dir)
    assert len(pd.read_csv(run.perturbations)) == len(PERTURBATIONS) + 1 and pd.read_csv(run.group_scores).empty
    for path in AuditStage().made(run): assert path.exists(), path
    assert audit_section(run, read_metrics(run)).startswith('<h2><a id="audit"></a>Audit')  # the headline links to #audit


def test_the_stage_with_a_sensitive_column_and_a_failing_check(audited_copy):
    run_dir, config = audited_copy
    run = RunDir(run_dir)
    for split in ("valid", "test"):
        frame = pd.read_parquet(run.split(split))
        frame.assign(sensitive=np.where(np.arange(len(frame)) % 2, "甲", "乙")).to_parquet(run.split(split), index=False)
    config = load_config(run.config, ["audit.fairness.mitigate=true", "audit.fairness.min_group_size=5",
                                      "audit.robustness.accuracy_drop={warn: 0, fail: 0}"])  # any figure fails
    audit = AuditStage().run(config, run_dir).metrics["audit"]
    assert audit["fairness"]["method"] == "sensitive_groups" and set(audit["fairness"]["groups"]) == {"甲", "乙"}
    assert audit["fairness"]["parity_difference"] is not None and "mitigation" in audit["fairness"]
    assert sorted(pd.read_csv(run.group_scores)["group"]) == ["乙", "甲"] and pd.read_csv(run.counterfactuals).empty
    assert audit["robustness"]["verdict"] == audit["verdict"] == "fail"
    assert any("robustness audit failed" in notice["message"] for notice in read_notices(run, "audit"))
