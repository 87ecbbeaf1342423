"""The bulk import bench's files (scripts/lib/bench_import.sh).

    bench_import_rows.py DIR PHONES ORDER ROWS

Writes into DIR: tenants.csv; phones.csv (PHONES phones, one line each);
phones-changed.csv (the same with 10,000 phones changed); changed.txt
(per changed phone, the path of its own file and a text that file shows
only once the change is served); columns.sql (phones.csv's columns as a
plain table, for the psql \\copy baseline).

ROWS=plain (ORDER mac or shuffled): Yealink phones of 20 tenants, nine
columns. In MAC order only lines change; shuffled adds a `variables`
column, and half the changes go to the phone's own row (its NTP server).

ROWS=varied (any ORDER; always random order): rows nearer a real fleet's,
and heavier (~180 bytes a row against ~80): 1,000 tenants of very
different sizes, all eight families with their own OUIs and models, MACs
spelled three ways, labels, JSON variables and line settings, provisioning
credentials, proxies, separate auth users, passwords of 12-24 characters,
names with non-ASCII letters, commas and quotes. The 10,000 changes are
spread over the file and cycle through a line's display name, password and
registrar and the phone's NTP server, on phones without provisioning
credentials (the check fetches their files without a Digest login).
"""
import json
import random
import string
import sys

CHANGES = 10_000


def plain(d, n, shuffled):
    step = max(1, n // CHANGES)
    changed = set(range(0, n, step))
    numbers = list(range(n))
    if shuffled:
        random.Random(20).shuffle(numbers)
    with open(f"{d}/tenants.csv", "w") as t:
        t.write("slug,name,default_region\n")
        for i in range(20):
            t.write(f"t{i:02d},Tenant {i},US\n")
    columns = ["tenant", "mac", "family", "model", "line", "extension", "display_name", "password", "registrar"]
    if shuffled:
        columns.append("variables")
    write_columns(d, columns)
    head = ",".join(columns) + "\n"
    with open(f"{d}/phones.csv", "w") as a, open(f"{d}/phones-changed.csv", "w") as b, \
            open(f"{d}/changed.txt", "w") as m:
        a.write(head)
        b.write(head)
        for i in numbers:
            mac = f"001565{0x100000 + i:06x}"
            row = f"t{i % 20:02d},{mac},yealink,T46S,1,{100000 + i},User {i},pw-{i}-Qx7,sip{i % 5}.example.net" \
                + (",\n" if shuffled else "\n")
            a.write(row)
            if i in changed and shuffled and (i // step) % 2:
                ntp = f"ntp-moved-{i}.example.net"
                b.write(row[:-2] + f',"{{""ntp_server"": ""{ntp}""}}"\n')
                m.write(f"{mac}.cfg {ntp}\n")
            elif i in changed:
                b.write(row.replace(f",User {i},", f",Renamed {i},"))
                m.write(f"{mac}.cfg Renamed {i}\n")
            else:
                b.write(row)


FAMILIES = {
    # family: (OUIs, models, the phone's own file from its MAC)
    "yealink": (["805ec0", "249ad8", "001565"], ["T46U", "T54W", "T57W", "T33G"], "{mac}.cfg"),
    "poly": (["0004f2", "64167f"], ["VVX 450", "VVX 250", "CCX 400"], "{mac}-phone.cfg"),
    "cisco-spa": (["e05fb9"], ["SPA504G", "SPA525G2"], "spa{mac}.xml"),
    "cisco-mpp": (["00ebd5"], ["CP-7841-3PCC", "CP-8851-3PCC"], "{mac}.xml"),
    "cisco-sep": (["0008e3"], ["CP-7965G", "CP-8845"], "SEP{MAC}.cnf.xml"),
    "grandstream": (["000b82", "c074ad"], ["GXP2170", "GRP2614"], "cfg{mac}.xml"),
    "snom": (["000413"], ["D785", "D735"], "{mac}.xml"),
    "fanvil": (["0c383e"], ["X6U", "X4U"], "{mac}.cfg"),
}
VARIED_COLUMNS = ["tenant", "mac", "family", "model", "label", "variables", "http_user", "http_password", "line",
                  "extension", "display_name", "auth_user", "password", "registrar", "proxy", "line_settings"]
NAMES = ["Zoë", "José", "Ana", "Björn", "Li", "O'Brien", "Smith, J", "Müller", "\"Big\" Al", "Front desk"]


def cell(v):
    return '"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\n') else v


def varied(d, n):
    rng = random.Random(4242)
    tenants = 1000
    with open(f"{d}/tenants.csv", "w") as t:
        t.write("slug,name,default_region\n")
        for i in range(tenants):
            t.write(f"cust-{i:04d},\"Customer {i}, Ltd\",{rng.choice(['US', 'CA', 'GB', 'DE', 'FR', 'AU'])}\n")
    # A few large customers and a long tail of small ones.
    owner = rng.choices(range(tenants), weights=[1 / (i + 1) ** 0.8 for i in range(tenants)], k=n)
    write_columns(d, VARIED_COLUMNS)

    def secret(k):
        return "".join(rng.choice(string.ascii_letters + string.digits + "!#%*") for _ in range(k))

    macs, rows = set(), []
    for i in range(n):
        family = rng.choice(list(FAMILIES))
        ouis, models, _ = FAMILIES[family]
        while True:
            mac = rng.choice(ouis) + f"{rng.getrandbits(24):06x}"
            if mac not in macs:
                macs.add(mac)
                break
        t = owner[i]
        extension = f"{1000 + rng.randrange(9000)}{i}"
        spelled = (":".join(mac[k:k + 2] for k in range(0, 12, 2)) if i % 3 == 0
                   else f"{mac[:4]}.{mac[4:8]}.{mac[8:]}" if i % 3 == 1 else mac)
        r = {"tenant": f"cust-{t:04d}", "mac": spelled, "family": family, "model": rng.choice(models),
             "label": f"Desk {rng.randrange(500)} {rng.choice(NAMES)}" if rng.random() < 0.5 else "",
             "variables": json.dumps({"ntp_server": f"ntp{t % 7}.example.org",
                                      "tz": rng.choice(["America/New_York", "Europe/Berlin"])})
             if rng.random() < 0.35 else "",
             "http_user": f"prov{i}" if rng.random() < 0.3 else "",
             "line": "1", "extension": extension, "display_name": f"{rng.choice(NAMES)} {i}",
             "auth_user": extension if rng.random() < 0.7 else f"u{extension}",
             "password": secret(rng.randrange(12, 25)), "registrar": f"pbx{t % 40}.voip.example.com",
             "proxy": f"sbc{t % 3}.voip.example.com:5060" if rng.random() < 0.4 else "",
             "line_settings": json.dumps({"codec": "G722"}) if rng.random() < 0.2 else ""}
        r["http_password"] = secret(16) if r["http_user"] else ""
        rows.append((mac, r))
    write_rows(f"{d}/phones.csv", rows)
    open_phones = [i for i, (_, r) in enumerate(rows) if not r["http_user"]]
    changes = sorted(rng.sample(open_phones, min(CHANGES, len(open_phones))))
    with open(f"{d}/changed.txt", "w") as m:
        for k, i in enumerate(changes):
            mac, r = rows[i]
            r = dict(r)
            # Plain text: a marker must read the same in every family's file
            # format (XML escapes quotes).
            kind = k % 4
            if kind == 0:
                r["display_name"] = marker = f"Moved {i}"
            elif kind == 1:
                r["password"] = marker = "".join(rng.choice(string.ascii_letters) for _ in range(20))
            elif kind == 2:
                r["registrar"] = marker = f"pbx-moved-{i}.voip.example.com"
            else:
                marker = f"ntp-moved-{i}.example.org"
                r["variables"] = json.dumps({"ntp_server": marker})
            rows[i] = (mac, r)
            path = FAMILIES[r["family"]][2].format(mac=mac, MAC=mac.upper())
            m.write(f"{path} {marker}\n")
    write_rows(f"{d}/phones-changed.csv", rows)


def write_rows(path, rows):
    with open(path, "w") as f:
        f.write(",".join(VARIED_COLUMNS) + "\n")
        for _, r in rows:
            f.write(",".join(cell(r[c]) for c in VARIED_COLUMNS) + "\n")


def write_columns(d, columns):
    with open(f"{d}/columns.sql", "w") as c:
        c.write(", ".join(f"{k} {'INT' if k == 'line' else 'TEXT'}" for k in columns))


if __name__ == "__main__":
    d, n, order, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if kind == "varied":
        varied(d, n)
    else:
        plain(d, n, order == "shuffled")
