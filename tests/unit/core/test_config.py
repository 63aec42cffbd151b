import pytest

from shopsense.core.config import ConfigError, base_conf_path, conf_dir, load_conf, parse_set, resolve_path


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_base_plus_local_overlay_is_valid():
    conf = load_conf([conf_dir() / "local.yaml"])
    assert conf["warehouse"] == "warehouse"
    assert conf["spark"]["master"] == "local[*]"
    assert conf.is_local
    assert conf["sources"]["online_retail"]["orders"]["columns"]["order_id"] == "InvoiceNo"


def test_cluster_overlay_sets_no_master_and_keeps_the_source_mapping():
    conf = load_conf([conf_dir() / "cluster.yaml"])
    assert conf["spark"]["master"] is None
    assert not conf.is_local
    orders = conf["sources"]["online_retail"]["orders"]
    assert orders["path"].startswith("hdfs://")
    assert orders["columns"]["sku"] == "StockCode"  # deep merge keeps base's mapping


def test_required_value_missing_names_key_and_file():
    with pytest.raises(ConfigError, match=r"base\.yaml: warehouse is required"):
        load_conf([])


def test_unknown_key_names_key_and_file(tmp_path):
    overlay = write(tmp_path, "mine.yaml", "warehouse: w\nsample:\n  n_customer: 5\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml: unknown key 'sample\.n_customer'"):
        load_conf([overlay])


def test_wrong_type_names_key_and_file(tmp_path):
    overlay = write(tmp_path, "mine.yaml", "warehouse: w\nsample:\n  n_customers: many\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml: sample\.n_customers must be an integer, got 'many'"):
        load_conf([overlay])


def test_set_overrides_are_typed_and_named_in_errors():
    conf = load_conf([conf_dir() / "local.yaml"], ["sample.n_customers=500", "sample.guest_share=0",
                                                    "spark.conf.spark.sql.ansi.enabled=false"])
    assert conf["sample"]["n_customers"] == 500
    assert conf["sample"]["guest_share"] == 0  # an int is accepted where a number is expected
    with pytest.raises(ConfigError, match=r"--set: sample\.seed must be an integer, got 1\.5"):
        load_conf([conf_dir() / "local.yaml"], ["sample.seed=1.5"])
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_set("sample.seed")


def test_bool_is_not_an_integer():
    with pytest.raises(ConfigError, match="sample.seed must be an integer, got True"):
        load_conf([conf_dir() / "local.yaml"], ["sample.seed=true"])


def test_choices_and_dates_are_checked():
    with pytest.raises(ConfigError, match="spark.python must be one of driver, inherit"):
        load_conf([conf_dir() / "local.yaml"], ["spark.python=conda"])
    with pytest.raises(ConfigError, match="as_of must be a date YYYY-MM-DD"):
        load_conf([conf_dir() / "local.yaml"], ["as_of=yesterday"])


def test_source_mapping_is_validated(tmp_path):
    overlay = write(tmp_path, "shop.yaml", """
warehouse: w
ingest: {source: shop}
sources:
  shop:
    orders:
      path: /data/orders.csv
      columns: {order_number: OrderNo}
""")
    with pytest.raises(ConfigError, match=r"shop\.yaml: sources\.shop\.orders\.columns\.order_number: "
                                          r"'order_number' is not a canonical column"):
        load_conf([overlay])
    overlay = write(tmp_path, "shop2.yaml", "warehouse: w\nsources:\n  shop:\n    orders:\n"
                                            "      path: x\n      format: xlsx\n")
    with pytest.raises(ConfigError, match="sources.shop.orders.format must be one of csv, parquet, json"):
        load_conf([overlay])


def test_ingest_source_must_name_a_source():
    with pytest.raises(ConfigError, match="ingest.source names 'nope', which is not among sources"):
        load_conf([conf_dir() / "local.yaml"], ["ingest.source=nope"])


def test_unreadable_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_conf([tmp_path / "missing.yaml"])
    bad = write(tmp_path, "bad.yaml", "warehouse: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML at line"):
        load_conf([bad])


def test_resolve_path_keeps_uris_and_absolutises_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_path("hdfs:///a/b") == "hdfs:///a/b"
    assert resolve_path("warehouse") == str(tmp_path / "warehouse")
    assert base_conf_path().name == "base.yaml"


def test_dates_stay_strings_from_files_and_set(tmp_path):
    overlay = write(tmp_path, "dated.yaml", "warehouse: w\nas_of: 2011-12-09\nsample:\n  start_date: 2024-01-01\n")
    conf = load_conf([overlay])
    assert (conf["as_of"], conf["sample"]["start_date"]) == ("2011-12-09", "2024-01-01")
    assert load_conf([overlay], ["as_of=2011-11-30"])["as_of"] == "2011-11-30"
