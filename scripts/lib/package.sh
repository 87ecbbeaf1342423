# Building and checking the .deb, shared by scripts/package (a release
# build) and scripts/lib/package_test.sh (the debug binary the test suite
# already built: packaging it costs no second build).

# cargo-deb at a known version, installed once into ~/.cargo/bin (3.8 still
# packages a dev-profile binary, with a warning; the package test relies on
# that to skip a release build).
CARGO_DEB_VERSION=3.8.0
ensure_cargo_deb() {
    case "$(cargo deb --version 2>/dev/null)" in
        "cargo-deb $CARGO_DEB_VERSION") ;;
        *) cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked >&2 ;;
    esac
}

# The package version: the crate's, then (in a git checkout) the number of
# commits and the commit, Debian revision 1: 0.1.0+771.g9705fda-1. Every
# build of the same crate version had one version, so a repository's
# `apt upgrade` never offered a newer build and dpkg could not tell an
# upgrade from a downgrade; the count orders builds of one branch.
default_deb_version() {
    local pkgid version count commit
    pkgid="$(cargo pkgid -p dialtone)"
    version="${pkgid##*[#@]}"
    if count="$(git rev-list --count HEAD 2>/dev/null)" && commit="$(git rev-parse --short=7 HEAD 2>/dev/null)"; then
        version="$version+$count.g$commit"
    fi
    echo "$version-1"
}

# build_deb PROFILE OUT [DEB_VERSION [cargo-deb flags...]]: packages the
# dialtone binary PROFILE (release, dev) already built into the folder OUT,
# with the shell completions and man pages it generates and a changelog
# entry for DEB_VERSION (lintian wants one); prints the .deb's path.
build_deb() {
    local profile="$1" out="$2" version="${3:-}" dir=release
    shift 3 || shift $#
    [ "$profile" = dev ] && dir=debug
    [ -n "$version" ] || version="$(default_deb_version)"
    local bin="target/$dir/dialtone"
    [ -x "$bin" ] || { echo "no $bin: build it first" >&2; return 1; }
    rm -rf target/package-assets
    "$bin" generate-assets target/package-assets
    local maintainer
    maintainer="$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
    cat >target/package-assets/changelog <<CHANGELOG
dialtone ($version) unstable; urgency=medium

  * Packaged by scripts/package from the dialtone sources; the changes are
    in the project's history.

 -- $maintainer  $(date -R)
CHANGELOG
    mkdir -p "$out"
    cargo deb -p dialtone --no-build --profile "$profile" --strip --output "$out" \
        --deb-version "$version" "$@" >&2
    echo "$out/dialtone_${version}_$(dpkg --print-architecture).deb"
}

# check_deb DEB: the binary, unit, default config (a conffile), every
# shipped template, completions, man pages and the monitoring kit are in
# it; the unit passes `systemd-analyze verify` against the unpacked binary;
# the packaged binary runs; lintian finds no error.
check_deb() {
    local deb="$1" root fail=0 path
    root="$(mktemp -d)"
    dpkg-deb --extract "$deb" "$root"
    dpkg-deb --control "$deb" "$root/DEBIAN"
    for path in usr/bin/dialtone usr/lib/systemd/system/dialtone.service etc/dialtone/dialtone.toml \
        usr/share/doc/dialtone/README.md usr/share/dialtone/monitoring/grafana-dashboard.json \
        usr/share/dialtone/monitoring/alerts.yml usr/share/bash-completion/completions/dialtone \
        usr/share/zsh/vendor-completions/_dialtone usr/share/fish/vendor_completions.d/dialtone.fish \
        usr/share/man/man1/dialtone.1.gz usr/share/man/man1/dialtone-serve.1.gz \
        DEBIAN/postinst DEBIAN/prerm DEBIAN/postrm; do
        [ -e "$root/$path" ] || { echo "missing from the package: /$path" >&2; fail=1; }
    done
    grep -qx "/etc/dialtone/dialtone.toml" "$root/DEBIAN/conffiles" || {
        echo "the default config is not a conffile" >&2; fail=1; }
    # cargo-deb's systemd snippets: enabled on install, daemon-reload and a
    # restart (if running) on upgrade, stopped on removal. Each runs only
    # where systemd does (/run/systemd/system), so the life-cycle test sees
    # the enabling, not these.
    local want
    for want in "postinst:deb-systemd-helper enable dialtone.service" \
        "postinst:systemctl --system daemon-reload" "postinst:deb-systemd-invoke try-restart dialtone.service" \
        "prerm:deb-systemd-invoke stop dialtone.service" "postrm:deb-systemd-helper purge dialtone.service" \
        "postinst:did not come back after the upgrade"; do
        grep -qF "${want#*:}" "$root/DEBIAN/${want%%:*}" || { echo "${want%%:*} lacks: ${want#*:}" >&2; fail=1; }
    done
    local shipped packaged
    shipped=$(cd templates && find . -name '*.tera' | sort)
    packaged=$(cd "$root/usr/share/dialtone/templates" && find . -name '*.tera' | sort)
    [ "$shipped" = "$packaged" ] || { echo "shipped templates differ from the packaged ones" >&2; fail=1; }
    "$root/usr/bin/dialtone" --version >&2 || fail=1
    # The unit names /usr/bin/dialtone: verify it against the unpacked tree.
    if command -v systemd-analyze >/dev/null 2>&1; then
        sed "s#/usr/bin/dialtone#$root/usr/bin/dialtone#g" packaging/dialtone.service >"$root/dialtone.service"
        systemd-analyze verify "$root/dialtone.service" >&2 || fail=1
    fi
    rm -rf "$root"
    if command -v lintian >/dev/null 2>&1; then
        lintian --fail-on error "$deb" >&2 || {
            echo "lintian reports errors" >&2; fail=1; }
    else
        echo "lintian is not installed" >&2; fail=1
    fi
    return "$fail"
}

