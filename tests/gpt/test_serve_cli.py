"""`jaxsys gpt chat|serve|sample` options are checked before any work starts (issue 21, items 6
and 11): exit 2 with one `jaxsys: error:` line, before the model is loaded or "serving" is printed."""

import pytest

from jaxsys.cli import main
from jaxsys.gpt.chat import check_chat_model
from jaxsys.gpt.tokenizer import Tokenizer


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["chat", "--max-tokens", "0"], "--max-tokens"),
        (["chat", "--temperature", "-1"], "--temperature"),
        (["chat", "--temperature", "nan"], "--temperature"),
        (["sample", "--temperature", "-1"], "--temperature"),
        (["sample", "--num", "-2"], "--num"),
        (["sample", "--max-tokens", "0"], "--max-tokens"),
        (["serve", "--max-batch", "0"], "--max-batch"),
        (["serve", "--chunk-steps", "0"], "--chunk-steps"),
        (["serve", "--max-num-samples", "0"], "--max-num-samples"),
        (["serve", "--max-tokens-limit", "0"], "--max-tokens-limit"),
        (["serve", "--max-body-bytes", "-5"], "--max-body-bytes"),
        (["serve", "--port", "99999"], "--port"),
        (["serve", "--port", "-1"], "--port"),
    ],
)
def test_bad_options_fail_before_work(tmp_path, capsys, argv, flag):
    # the model folder does not exist: a late check would report that instead of the option
    try:
        rc = main(["gpt", *argv, "--model", str(tmp_path / "nowhere")])
    except SystemExit as e:  # argparse errors exit from the parser
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith("jaxsys: error:") and flag in lines[-1], err
    assert "serving" not in err and "Traceback" not in err and "nowhere" not in err


def test_no_chat_message_names_the_real_flag():
    with pytest.raises(Exception) as e:
        check_chat_model(Tokenizer(list("ab")))
    assert "--mode chat" in str(e.value) and "--chat)" not in str(e.value)
