import json
import os
import stat

import pandas as pd
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression

from service.errors import ArtifactError
from service.models import artifacts
from service.models.packaging import package_model
from tests.builders import flip_byte

KEY = "test-signing-key"


def tiny_data():
    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], "n": [1, 2, 1, 2, 1, 2, 1, 2]})
    y = pd.Series([0, 0, 0, 0, 1, 1, 1, 1])
    return X, y


def package_tiny(root, name="tiny", signing_key=None):
    X, y = tiny_data()
    model = LogisticRegression().fit(X, y)
    manifest = package_model(model, name, root, X, y, signing_key=signing_key)
    return artifacts.version_dir(root, name, manifest["version"])


@pytest.fixture
def folder(tmp_path):
    return package_tiny(tmp_path)


def edit_manifest(folder, change):
    manifest = json.loads((folder / artifacts.MANIFEST).read_text())
    change(manifest)
    artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest, mode=0o444)


def refusal(folder, **kwargs):
    with pytest.raises(ArtifactError) as excinfo:
        artifacts.verify_version(folder, **kwargs)
    return str(excinfo.value)


def test_a_fresh_version_verifies(folder):
    verified = artifacts.verify_version(folder, expected_name="tiny", expected_version=1,
                                        sklearn_version=sklearn.__version__)
    assert verified.folder == folder
    assert verified.model_path == folder / "model.joblib"
    assert verified.manifest["name"] == "tiny" and verified.manifest["version"] == 1


def test_one_flipped_byte_is_refused(folder):
    flip_byte(folder / "model.joblib")
    assert refusal(folder) == "file model.joblib does not match its sha256 in the manifest"


def test_a_truncated_file_is_refused(folder):
    path = folder / "model.joblib"
    size = path.stat().st_size
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:-10])
    assert refusal(folder) == f"file model.joblib has size {size - 10}, manifest says {size}"


def test_a_missing_model_file_is_refused(folder):
    (folder / "model.joblib").unlink()
    assert refusal(folder) == "file model.joblib is missing"


def test_a_missing_manifest_is_refused(folder):
    (folder / "manifest.json").unlink()
    assert refusal(folder) == "manifest.json is missing"


def test_an_extra_file_is_refused(folder):
    (folder / "notes.txt").write_text("hello")
    (folder / ".hidden").write_text("hello")
    assert refusal(folder) == "unexpected files not in the manifest: .hidden, notes.txt"


def test_an_unknown_model_format_is_refused(folder):
    edit_manifest(folder, lambda m: m.update(model_format="onnx"))
    assert refusal(folder) == "unknown model format 'onnx'; supported: joblib"


def test_a_manifest_that_is_not_json_is_refused(folder):
    os.chmod(folder / "manifest.json", 0o644)
    (folder / "manifest.json").write_text("{not json")
    assert refusal(folder).startswith("manifest.json is not valid JSON")


def test_a_manifest_that_is_not_an_object_is_refused(folder):
    artifacts.write_json_atomic(folder / "manifest.json", [1, 2])
    assert refusal(folder) == "manifest.json is not a JSON object"


def test_a_manifest_lacking_a_field_is_refused(folder):
    edit_manifest(folder, lambda m: m.pop("files"))
    assert refusal(folder) == "manifest.json lacks the field 'files'"


def test_an_unknown_format_version_is_refused(folder):
    edit_manifest(folder, lambda m: m.update(format_version=99))
    assert refusal(folder) == "unsupported manifest format_version 99"


def test_an_illegal_file_name_in_the_manifest_is_refused(folder):
    edit_manifest(folder, lambda m: m["files"].update({"../evil": {"sha256": "0" * 64, "size": 1}}))
    assert refusal(folder) == "illegal file name in manifest: '../evil'"


@pytest.mark.parametrize("change, message", [
    (lambda m: m["files"].update({"model.joblib": "abc"}), "manifest entry for model.joblib is not an object"),
    (lambda m: m.update(files=["model.joblib"]), "manifest does not list the model file"),
    (lambda m: m.update(model_file=["model.joblib"]), "manifest does not list the model file"),
    (lambda m: m.update(model_file="other.joblib"), "manifest does not list the model file"),
    (lambda m: m.update(libraries="sklearn"), "model was trained with scikit-learn unknown, this server runs 1.9.1"),
    (lambda m: m["input"].update(features=[]), "manifest.json input.features must be a non-empty list"),
    (lambda m: m["input"]["features"][0].update(type="tensor"),
     "manifest.json input.features holds an entry without a name or a known type"),
    (lambda m: m.update(output=[1]), "manifest.json output must be an object"),
])
def test_a_malformed_manifest_is_an_artifact_error_not_a_crash(folder, change, message):
    edit_manifest(folder, change)
    assert refusal(folder, sklearn_version="1.9.1") == message


def test_nan_in_a_manifest_is_not_json(folder):
    os.chmod(folder / "manifest.json", 0o644)
    text = (folder / "manifest.json").read_text()
    (folder / "manifest.json").write_text(text.replace('"description": ""', '"description": NaN'))
    assert refusal(folder, signing_key=KEY) == "manifest.json is not valid JSON: NaN is not allowed"


def test_a_manifest_naming_another_model_is_refused(folder):
    assert refusal(folder, expected_name="other") == "manifest names model 'tiny', folder is 'other'"


def test_a_manifest_naming_another_version_is_refused(folder):
    assert refusal(folder, expected_version=2) == "manifest says version 1, folder is 2"


def test_a_version_copied_under_another_number_is_refused(tmp_path, folder):
    copy = folder.parent / "7"
    copy.mkdir()
    for name in ("model.joblib", "manifest.json"):
        (copy / name).write_bytes((folder / name).read_bytes())
    assert refusal(copy, expected_name="tiny", expected_version=7) == "manifest says version 1, folder is 7"


def test_a_different_scikit_learn_minor_is_refused(folder):
    edit_manifest(folder, lambda m: m["libraries"].update({"scikit-learn": "0.24.2"}))
    message = refusal(folder, sklearn_version="1.9.1")
    assert message == "model was trained with scikit-learn 0.24.2, this server runs 1.9.1"


def test_a_different_scikit_learn_patch_is_accepted(folder):
    edit_manifest(folder, lambda m: m["libraries"].update({"scikit-learn": "1.9.0"}))
    assert artifacts.verify_version(folder, sklearn_version="1.9.7").manifest["libraries"]["scikit-learn"] == "1.9.0"


def test_an_unknown_scikit_learn_version_is_refused(folder):
    edit_manifest(folder, lambda m: m["libraries"].pop("scikit-learn"))
    assert refusal(folder, sklearn_version="1.9.1") == "model was trained with scikit-learn unknown, this server runs 1.9.1"


def test_a_signature_is_required_when_a_key_is_configured(folder):
    assert refusal(folder, signing_key=KEY) == "manifest is not signed and MODEL_SIGNING_KEY requires a signature"


def test_a_signature_made_with_another_key_is_refused(tmp_path):
    folder = package_tiny(tmp_path, signing_key="another-key")
    assert refusal(folder, signing_key=KEY) == "manifest signature does not match"


def test_a_manifest_edited_after_signing_is_refused(tmp_path):
    folder = package_tiny(tmp_path, signing_key=KEY)
    edit_manifest(folder, lambda m: m["output"].update(classes=[1, 0]))
    assert refusal(folder, signing_key=KEY) == "manifest signature does not match"


def test_a_correct_signature_is_accepted(tmp_path):
    folder = package_tiny(tmp_path, signing_key=KEY)
    verified = artifacts.verify_version(folder, expected_name="tiny", expected_version=1, signing_key=KEY)
    signature = verified.manifest["signature"]
    assert signature.startswith("hmac-sha256:") and len(signature) == len("hmac-sha256:") + 64
    assert signature == artifacts.sign_manifest(verified.manifest, KEY)
    # the signature covers the file hashes: a flipped byte is still caught
    flip_byte(folder / "model.joblib")
    assert refusal(folder, signing_key=KEY) == "file model.joblib does not match its sha256 in the manifest"


def test_sign_manifest_ignores_the_signature_field_and_key_order():
    a = artifacts.sign_manifest({"b": 1, "a": [1, 2]}, KEY)
    assert a == artifacts.sign_manifest({"a": [1, 2], "b": 1, "signature": "whatever"}, KEY)
    assert a != artifacts.sign_manifest({"a": [2, 1], "b": 1}, KEY)
    assert a != artifacts.sign_manifest({"b": 1, "a": [1, 2]}, "other")


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", "", "A", "-a", "_a", "a" * 65, "a b", "a\n", None, 1])
def test_check_model_name_rejects(name):
    with pytest.raises(ValueError, match=r"model names match"):
        artifacts.check_model_name(name)


@pytest.mark.parametrize("name", ["a", "breast-cancer", "m_2", "0", "a" * 64])
def test_check_model_name_accepts(name):
    assert artifacts.check_model_name(name) == name


@pytest.mark.parametrize("version", ["0", 0, "-1", -1, "01", "1.0", 1.0, "../1", "1/2", "..", "", " 1", "1\n",
                                     True, False, "1" * 10, None])
def test_check_version_rejects(version):
    with pytest.raises(ValueError, match="versions are positive integers"):
        artifacts.check_version(version)


@pytest.mark.parametrize("version, expected", [(1, 1), ("1", 1), ("42", 42), (999_999_999, 999_999_999)])
def test_check_version_accepts(version, expected):
    assert artifacts.check_version(version) == expected


@pytest.mark.parametrize("name, version", [("../x", 1), ("a/b", 1), ("..", 1), ("m", ".."), ("m", "../1"),
                                           ("m", "0"), ("m", "-1"), ("m", "01"), ("m", True)])
def test_version_dir_rejects_traversal(tmp_path, name, version):
    with pytest.raises(ValueError):
        artifacts.version_dir(tmp_path, name, version)


def test_version_dir_builds_the_path(tmp_path):
    assert artifacts.version_dir(tmp_path, "m", "3") == tmp_path / "m" / "3"


def test_listing_skips_illegal_names_and_staging_folders(tmp_path, folder):
    (tmp_path / "Bad Name").mkdir()
    (tmp_path / "tiny" / ".staging-abc").mkdir()
    (tmp_path / "tiny" / "010").mkdir()
    (tmp_path / "tiny" / "12").mkdir()
    assert artifacts.list_models(tmp_path) == ["tiny"]
    assert artifacts.list_versions(tmp_path, "tiny") == [1, 12]
    assert artifacts.list_versions(tmp_path, "absent") == []
    assert artifacts.list_models(tmp_path / "nowhere") == []


def test_write_json_atomic_leaves_no_temp_files(tmp_path):
    path = tmp_path / "state.json"
    for i in range(3):
        artifacts.write_json_atomic(path, {"i": i, "text": "é"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"i": 2, "text": "é"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    artifacts.write_json_atomic(path, {}, mode=0o444)
    assert stat.S_IMODE(path.stat().st_mode) == 0o444


def test_write_json_atomic_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "state.json"
    artifacts.write_json_atomic(path, {"good": True})
    with pytest.raises(ValueError):
        artifacts.write_json_atomic(path, {"bad": float("nan")})
    assert json.loads(path.read_text()) == {"good": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_file_entry_matches_sha256(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert artifacts.file_entry(path) == {
        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "size": 3}


def test_a_boolean_version_is_not_version_one(folder):
    edit_manifest(folder, lambda m: m.update(version=True))
    assert refusal(folder, expected_version=1) == "manifest says version True, folder is 1"


def test_a_version_carries_a_content_hash_of_its_files(folder):
    manifest = artifacts.read_manifest(folder)
    assert manifest["content_sha256"] == artifacts.content_hash(manifest["files"])
    assert len(manifest["content_sha256"]) == 64
    edit_manifest(folder, lambda m: m.update(content_sha256="0" * 64))
    assert refusal(folder) == "content_sha256 does not match the files listed in the manifest"
