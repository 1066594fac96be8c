"""The CLI and the HTTP API over one registry, in-process: a change made by one is seen by the other."""

from __future__ import annotations

from service.cli import cli

ROW = [50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]


def test_a_label_set_by_the_cli_is_served_after_the_next_poll(app, client, runner):
    url = "/v1/models/diabetes/labels/staging:predict"
    assert client.post(url, json={"instances": [ROW]}).status_code == 404
    result = runner.invoke(cli, ["label", "set", "diabetes", "staging", "1", "--reason", "from the shell"])
    assert result.exit_code == 0, result.output
    app.extensions["catalog"].refresh()  # what each worker's poll does
    answer = client.post(url, json={"instances": [ROW]})
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "1"


def test_an_http_change_is_in_the_history_the_cli_prints(make_app, runner, tmp_path):
    from service.security.keys import create_key

    keys = tmp_path / "keys.json"
    headers = {"X-API-Key": create_key(keys, "ops", ["admin"])}
    client = make_app(api_keys_file=keys).test_client()  # over the same artifacts as the runner's
    changed = client.put("/v1/models/diabetes/labels/staging", json={"version": 1, "reason": "over http"},
                         headers=headers)
    assert changed.status_code == 200, changed.get_data(as_text=True)
    result = runner.invoke(cli, ["history", "diabetes"])
    assert result.exit_code == 0, result.output
    assert "over http" in result.output and "key:ops" in result.output
