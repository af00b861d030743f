//! `--set`: the settings OpenWrt keeps in UCI (/etc/config/probegate), laid over the site
//! config by the init script, reach `check-config` (and `run`, which shares the loading).

use crate::harness::{Broker, COUNTER, Site, text};

#[test]
fn check_config_applies_uci_settings_and_names_a_bad_one() {
    let broker = Broker::start();
    let site = Site::new(&broker, &[COUNTER], "");
    let check = |sets: &[&str]| {
        let mut cmd = site.command("info");
        cmd.arg("check-config").arg(&site.config);
        for set in sets {
            cmd.args(["--set", set]);
        }
        cmd.output().unwrap()
    };

    let out = check(&["gateway.site=store-0042", "gateway.id=gw-7", "log=debug"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("ok (site store-0042, gateway gw-7, plugins: visitor-counter)"),
        "{stdout}"
    );

    let out = check(&["gateway.site=Store 42"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--set gateway.site=\"Store 42\""),
        "{stderr}"
    );

    let out = check(&["privacy.signal_floor_dbm=0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown key"));
}
