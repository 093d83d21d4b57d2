//! Generated POSIX sh that reads (probes) and changes (fixes) many items in ONE remote command,
//! because round trips, not bytes, are what an apply costs on a real network.
//!
//! Everything a script prints is a stream of netstrings (`LEN:BYTES,`), never human text, so
//! names with spaces, quotes, backticks, newlines or non-ASCII bytes survive. Records:
//! - `P IDX (KEY VALUE)* ''`  actual state of item IDX (no `type` key = the path is absent)
//! - `Q IDX (KEY VALUE)* ''`  more fields of the latest `P` record of IDX (batched stat/hash)
//! - `X IDX RC MESSAGE`       result of the fix of item IDX
//! - `U IDX RC`               exit code of item IDX's `unless` command
//! - `L RC OUTPUT`            result of the caller's prologue (e.g. taking a lock)
//! - `D DIGEST RELEASED`      SHA-256 of the prologue and probe output (empty: no digest tool
//!   or no temp file) and whether the caller's steady check released the lock (`1`)
//!
//! Every user string reaches the script through [`crate::shell::quote`].

use crate::shell::quote;

/// Shell helpers shared by probe and fix scripts. `LC_ALL=C` makes `${#x}` count bytes.
///
/// `pf IDX PATH HASH LIMIT SCAN [LINK...]` never looks through a symlinked parent of PATH
/// other than the LINKs the repo manages (`wl`; the record gets `unsafe` with the reason
/// instead), and with SCAN = 1 reports (`stale`), with SCAN = 2 removes, the staging leftovers
/// of interrupted applies beside PATH: `.cinch-tmp-*` entries owned by this user and untouched
/// for an hour (a younger one may belong to an apply of another node name on the same machine
/// that is writing it right now). Both cost no process unless there is something to report.
///
/// Records go out in as few writes as possible (one `printf` per record where the fields are
/// known), and `cza` turns a batch's stat and sha256sum lines into `Q` records with one `awk`
/// (dash's `read` costs a system call per byte); without awk, `czl` reads them in the shell.
///
/// Path probes (`pf`, `pd`, `ps`) cost no process each: they classify the path with test
/// builtins, print the `P` record at once and register the path (`cg`). `cz` then reads the
/// stat of every registered path with ONE `stat` and the sha256 of every regular file with ONE
/// `sha256sum`, and prints a `Q` record per path (merged into its `P` record by [`parse`]).
/// Both outputs are aligned with their arguments by line (one line per argument when the tool
/// exits 0: stat's format has no newline, sha256sum escapes names with newlines); when either
/// fails (a path vanished, a file is unreadable, no temp directory) that batch falls back to
/// one process per path, as before, so a failure never shifts one item's state onto another.
///
/// File probes whose arguments hold no tab or newline are not shell at all: `pm LEN` reads
/// LEN bytes of stdin, one line per file (the `pf` arguments separated by tabs), and `pa`
/// (one `awk` program, run in four modes) lists every path and parent to `stat` (numeric,
/// with `%n`: one `stat` via `xargs -0`, absent paths simply missing from its output), the
/// owner and group names once per distinct uid/gid pair, the regular files to hash (one
/// `sha256sum`, lines aligned with the list; file by file when it fails), and then prints
/// every `P` record. The symlinked-parent check is the same as `wl`'s, on the parents' stat;
/// the few items it refuses, the staging scans (once per directory) and the contents for a
/// diff are done by the shell afterwards. With no awk, `xargs -0` or `stat -c`, or for a
/// manifest under 16 KB (some 100 files, where the awk's dozen processes cost more than the
/// shell's work per file: a node of 20 files started 31 processes for a steady apply, 20
/// now), `pml` reads the same lines and calls `pf` per file. The script is the same size for
/// 3 files as for 100,000.
const PRELUDE: &str = r#"export LC_ALL=C
f() { printf '%s:%s,' "${#1}" "$1"; }
fc() { n=$(wc -c < "$1" | tr -d ' ') && printf '%s:' "$n" && cat -- "$1" && printf ','; }
hc=; hw=0; cn=0; cT=; cN='
'
aw=0; command -v awk >/dev/null 2>&1 && aw=1
trap '[ -z "$cT" ] || rm -rf -- "$cT"' EXIT
ctmp() { [ -n "$cT" ] || cT=$(mktemp -d 2>/dev/null) || cT=; [ -n "$cT" ]; }
ty() {
  if [ -L "$1" ]; then t=symlink
  elif [ -f "$1" ]; then t=file
  elif [ -d "$1" ]; then t=directory
  elif [ -e "$1" ]; then t=other
  else t=; return 1; fi
}
cg() { cn=$((cn+1)); eval "ci$cn=\$1 cp$cn=\$2 ch$cn=\$3 cl$cn=\$4"; }
cs1() { stat -c '%a/%u/%g/%U/%G/%s' -- "$1" 2>/dev/null; }
czl() {
  j=1; while [ $j -le $cn ]; do
    eval "i=\$ci$j p=\$cp$j h=\$ch$j lm=\$cl$j k=\$cf$j"
    if [ $sr = 0 ]; then IFS= read -r s <&3 || s=; else s=$(cs1 "$p") || s=; fi
    r="1:Q,${#i}:$i,"
    [ -z "$s" ] || r="${r}4:stat,${#s}:$s,"
    if [ "$k" = 1 ]; then
      if [ $hr = 0 ]; then IFS= read -r v <&4 || v=; v=${v#\\}
      else v=$(sha256sum 2>/dev/null < "$p") || v=; fi
      v=${v%% *}
      if [ -n "$v" ]; then
        r="${r}6:sha256,${#v}:$v,"
        if [ "$lm" -gt 0 ] && [ "$v" != "$h" ] && [ -n "$s" ] && [ "${s##*/}" -le "$lm" ]; then printf '%s7:content,' "$r"; r=; fc "$p"; fi
      fi
    fi
    printf '%s0:,' "$r"
    j=$((j+1))
  done
}
cza() {
  j=1; while [ $j -le $cn ]; do
    eval "printf '%s %s %s %s\n' \"\$ci$j\" \"\${cf$j:-0}\" \"\${cl$j:-0}\" \"\${ch$j:--}\""
    j=$((j+1))
  done > "$cT/l"
  awk -v S="$cT/s" -v H="$cT/h" -v C="$cT/c" '
    { s = ""; if ((getline s < S) <= 0) s = ""
      r = "1:Q," length($1) ":" $1 ","
      if (s != "") r = r "4:stat," length(s) ":" s ","
      if ($2 == 1) {
        v = ""; if ((getline v < H) <= 0) v = ""
        sub(/^\\/, "", v); sub(/ .*/, "", v)
        if (v != "") {
          r = r "6:sha256," length(v) ":" v ","
          n = s; sub(/.*\//, "", n)
          if ($3 + 0 > 0 && v != $4 && s != "" && n + 0 <= $3 + 0) print NR > C
        }
      }
      printf "%s0:,", r }' "$cT/l"
  if [ -s "$cT/c" ]; then
    while IFS= read -r j; do eval "i=\$ci$j p=\$cp$j"; f Q; f "$i"; f content; fc "$p"; f ''; done < "$cT/c"
    true > "$cT/c"
  fi
}
cz() {
  [ $cn -gt 0 ] || return 0
  sr=1; hr=1; set --
  j=1; while [ $j -le $cn ]; do eval "set -- \"\$@\" \"\$cp$j\""; j=$((j+1)); done
  if ctmp; then stat -c '%a/%u/%g/%U/%G/%s' -- "$@" > "$cT/s" 2>/dev/null && sr=0; fi
  set --; nl=0
  j=1; while [ $j -le $cn ]; do
    eval "p=\$cp$j h=\$ch$j"; k=0
    if [ -n "$h" ] && [ -f "$p" ] && [ ! -L "$p" ]; then
      set -- "$@" "$p"; k=1
      case $p in *"$cN"*) nl=1;; esac
    fi
    eval "cf$j=$k"; j=$((j+1))
  done
  if [ -n "$cT" ] && [ $nl = 0 ]; then
    if [ $# = 0 ]; then true > "$cT/h" && hr=0
    else sha256sum -- "$@" > "$cT/h" 2>/dev/null && hr=0; fi
  fi
  if [ $sr = 0 ] && [ $hr = 0 ] && [ $aw = 1 ]; then cza
  elif [ $sr = 0 ] || [ $hr = 0 ]; then
    if [ $sr = 1 ]; then true > "$cT/s"; fi
    if [ $hr = 1 ]; then true > "$cT/h"; fi
    czl 3< "$cT/s" 4< "$cT/h"
  else czl; fi
  cn=0
}
um() {
  cb=$1; p=$2; shift 2
  for e in "$p"/* "$p"/.[!.]* "$p"/..?*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    n=${e##*/}; k=0
    for m in "$@"; do if [ "$n" = "$m" ]; then k=1; break; fi; done
    [ $k = 1 ] || "$cb" "$e" "$n" || return 1
  done
}
wl() {
  wq=${1%/*}; wc=; shift
  while [ -n "$wq" ]; do
    wq=${wq#/}; wn=${wq%%/*}
    case $wq in */*) wq=/${wq#*/};; *) wq=;; esac
    wc=$wc/$wn
    if [ -L "$wc" ]; then
      wk=0; for wm in "$@"; do [ "$wm" != "$wc" ] || wk=1; done
      if [ $wk = 0 ]; then
        wr_=$(readlink -- "$wc"; echo x); wr_=${wr_%??}
        wlr="parent $wc is a symlink to $wr_ that the repo does not manage; refusing to write through it (use the real path, or manage $wc with a symlink item)"
        return 1
      fi
    fi
  done
}
st() {
  for e in "${2%/}"/.cinch-tmp-*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    { [ ! -L "$e" ] && [ -O "$e" ] && [ -n "$(find "$e" -prune -mmin +60 2>/dev/null)" ]; } || continue
    if [ "$1" = 2 ] && rm -rf -- "$e" 2>/dev/null; then continue; fi
    f stale; f "$e"
  done
}
pf() {
  printf '1:P,%s:%s,' "${#1}" "$1"
  a1=$1 a2=$2 a3=$3 a4=$4 a5=$5; shift 5
  if ! wl "$a2" "$@"; then f unsafe; f "$wlr"; f ''
  else
    [ "$a5" = 0 ] || { a6=${a2%/*}; st "$a5" "${a6:-/}"; }
    if ty "$a2"; then
      printf '4:type,%s:%s,0:,' "${#t}" "$t"
      if [ "$t" = file ]; then cg "$a1" "$a2" "$a3" "$a4"; else cg "$a1" "$a2"; fi
    else f ''; fi
  fi
}
pe() { f extra; f "$2"; }
pd() {
  f P; f "$1"; i=$1; p=$2; u=$3; shift 3
  if ty "$p"; then
    f type; f "$t"; cg "$i" "$p"
    if [ "$t" = directory ] && [ "$u" = 1 ]; then um pe "$p" "$@"; fi
  fi
  f ''
}
ps() {
  f P; f "$1"
  if ty "$2"; then
    f type; f "$t"; cg "$1" "$2"
    if [ "$t" = symlink ]; then l=$(readlink -- "$2"; echo x); l=${l%??}; f target; f "$l"; fi
  fi
  f ''
}
g=
take() {
  [ -n "$g" ] || { g=0; head --version 2>/dev/null | grep -q GNU && g=1; }
  if [ $g = 1 ]; then head -c "$1"; else dd bs=1 count="$1" 2>/dev/null; fi
}
pmok=
pmc() {
  [ -n "$pmok" ] || { pmok=0; [ $aw = 1 ] && [ "$(printf '/\000' | xargs -0 stat -c %F 2>/dev/null)" = directory ] && pmok=1; }
  [ $pmok = 1 ]
}
pm() { if [ "$1" -ge 16384 ] && pmc && ctmp; then take "$1" > "$cT/m"; pmq "$1"; else take "$1" | pml; fi; }
pmx() { oi=$IFS; IFS='	'; set -f; set -- $1; set +f; IFS=$oi; pf "$@"; }
pml() { n=0; while IFS= read -r x; do pmx "$x"; n=$((n+1)); [ $n -lt 256 ] || { cz; n=0; }; done; cz; }
pa() {
  cT="$cT" zr="$zr" awk -F '\t' -v P="$1" -v HK="$zk" -v HW="$zw" -v T0="$zt" -v HN="$cT/hn" -v MF="$cT/m" -v PL="$cT/mp" -v S="$cT/ms" -v N="$cT/mn" -v H="$cT/mh" -v U="$cT/mu" -v T="$cT/mt" -v C="$cT/mc" -v R="$cT/mr" '
    function dn(p,   n, b) {
      if (dl && substr(p, 1, dl) == dp && index(substr(p, dl + 1), "/") == 0) return dd
      n = split(p, b, "/"); dd = substr(p, 1, length(p) - length(b[n]) - 1); dp = dd "/"; dl = length(dp)
      return dd
    }
    function tn(k) {
      if (k == "regular file" || k == "regular empty file") return "file"
      if (k == "directory") return k
      if (k == "symbolic link") return "symlink"
      return "other"
    }
    function unp(p, lk,   d, n, b, q, j, l, ok, r, a, i) {
      if (!anyl) return 0
      d = dn(p); if (d == "") return 0
      if (lk == "" && (d in ud)) return ud[d]
      n = split(substr(d, 2), b, "/"); q = ""; r = 0; l = split(lk, a, "\t")
      for (j = 1; j <= n; j++) {
        q = q "/" b[j]
        if (ty[q] == "symbolic link") { ok = 0; for (i = 1; i <= l; i++) if (a[i] == q) ok = 1; if (!ok) { r = 1; break } }
      }
      if (lk == "") ud[d] = r
      return r
    }
    function uns(   lk, l) {
      if (!anyl) return 0
      lk = ""; for (l = 6; l <= NF; l++) lk = lk (l > 6 ? "\t" : "") $l
      return unp($2, lk)
    }
    BEGIN {
      for (j = 0; j < P; j++) plf[j] = PL j
      sk = 0
      while ((getline < MF) > 0) {
        if ($1 !~ /^[0-9]+$/ || substr($2, 1, 1) != "/") continue
        p = $2; d = dn(p)
        if (!(p in mf) && !(p in wa)) { print p > plf[sk]; sk = (sk + 1) % P }
        mf[p] = 1
        if (NF >= 6) { q = $6; for (j = 7; j <= NF; j++) q = q "\t" $j; lk[p] = q }
        if (d != "" && !(d in wd)) {
          wd[d] = 1; n = split(substr(d, 2), b, "/"); q = ""
          for (j = 1; j <= n; j++) { q = q "/" b[j]; if (!(q in wa)) { wa[q] = 1; if (!(q in mf)) { print q > plf[sk]; sk = (sk + 1) % P } } }
        }
      }
      close(MF)
      for (j = 0; j < P; j++) close(plf[j])
      system("pp=" P "; . \"$cT/ps\"")
      FS = "|"; nf = HK ? 6 : 4
      for (sk = 0; sk < P; sk++) { sf = S sk; while ((getline < sf) > 0) {
        if (NF < nf) continue
        if (NF == nf) nm = $nf
        else { nm = $0; for (j = 1; j < nf; j++) nm = substr(nm, index(nm, "|") + 1) }
        if (!(nm in mf) && !(nm in wa)) continue
        if (HK) { zt = $1; zk = $2; k = $3; z = $4; pr = $5 } else { k = $1; z = $2; pr = $3 }
        if (!(k in tnc)) tnc[k] = tn(k)
        tk[nm] = tnc[k]; st[nm] = pr; sz[nm] = z
        if (HK) { ck[nm] = zk; ct[nm] = zt }
        if (nm in wa) { ty[nm] = k; if (k == "symbolic link") anyl = 1 }
        q = substr(pr, index(pr, "/") + 1); if (!(q in rep)) { rep[q] = 1; print nm > R }
      } }
      for (j = 0; j < P; j++) close(S j)
      FS = "\t"
      close(R)
      HC = ENVIRON["zr"]
      if (HC != "") { while ((getline x < HC) > 0) if (index(x, " ") == 65) oc[substr(x, 66)] = substr(x, 1, 64); close(HC) }
      hk = 0
      for (p in mf) {
        if (tk[p] != "file" || (HK && (ck[p] in oc)) || unp(p, lk[p])) continue
        print p > (H "l" hk); hk = (hk + 1) % P
      }
      for (j = 0; j < P; j++) close(H "l" j)
      system("pp=" P "; . \"$cT/ph\"")
      for (j = 0; j < P; j++) {
        sf = H "l" j; hf = H j
        while ((getline p < sf) > 0) { v = ""; if ((getline v < hf) <= 0) v = ""; sub(/^\\/, "", v); sub(/ .*/, "", v); hv[p] = v }
        close(H "l" j); close(H j)
      }
      while ((getline x < N) > 0) { un = ""; getline un < N; getline g < N; gn = ""; getline gn < N; un_[x] = un; gn_[g] = gn }
      OFS = ""; ORS = ""
    }
    $1 !~ /^[0-9]+$/ || substr($2, 1, 1) != "/" { next }
    {
      if (uns()) { print $0 "\n" > U; next }
      if ($5 != 0) { d = dn($2); if (d == "") d = "/"; print $1 "\t" $5 "\t" d "\n" > T }
      p = $2
      if (!(p in st)) { print "1:P,", length($1), ":", $1, ",0:,"; next }
      k = tk[p]; pr = st[p]
      if (!(pr in on_)) { split(pr, f, "/"); on_[pr] = pr "/" ((f[2] in un_) ? un_[f[2]] : "UNKNOWN") "/" ((f[3] in gn_) ? gn_[f[3]] : "UNKNOWN") "/" }
      s = on_[pr] sz[p]
      if (k != "file") { print "1:P,", length($1), ":", $1, ",4:type,", length(k), ":", k, ",4:stat,", length(s), ":", s, ",0:,"; next }
      if (HK && ((q = ck[p]) in oc)) v = oc[q]; else v = hv[p]
      if (v == "") { print "1:P,", length($1), ":", $1, ",4:type,4:file,4:stat,", length(s), ":", s, ",0:,"; next }
      if (HW && length(v) == 64 && ct[p] + 2 <= T0 + 0) nc[ck[p]] = v
      print "1:P,", length($1), ":", $1, ",4:type,4:file,4:stat,", length(s), ":", s, ",6:sha256,", length(v), ":", v, ",0:,"
      if ($4 + 0 > 0 && v != $3 && sz[p] + 0 <= $4 + 0) print $1 "\t" p "\n" > C
    }
    END {
      if (!HW) exit
      for (q in nc) { nn++; if (!(q in oc) || oc[q] != nc[q]) ch = 1 }
      for (q in oc) on++
      if (ch || nn != on) { for (q in nc) print nc[q] " " q "\n" > HN; close(HN) }
    }' "$cT/m"
}
pmq() {
  pp=1
  if [ "$1" -ge 262144 ] && command -v nproc >/dev/null 2>&1; then pp=$(nproc 2>/dev/null) || pp=1; fi
  case $pp in ''|*[!0-9]*) pp=1;; esac; [ "$pp" -ge 1 ] || pp=1; [ "$pp" -le 4 ] || pp=4
  k=0; while [ $k -lt $pp ]; do true > "$cT/mhl$k"; true > "$cT/mp$k"; true > "$cT/ms$k"; k=$((k+1)); done
  true > "$cT/mr"; true > "$cT/mn"
  true > "$cT/mu"; true > "$cT/mt"; true > "$cT/mc"
  zk=; zr=; zw=; zt=0; zf='%F|%s|%a/%u/%g|%n'
  if [ -n "$hc" ] && [ "$1" -ge 262144 ]; then
    if [ -f "$hc" ] && [ ! -L "$hc" ] && [ -O "$hc" ]; then zr=$hc; zw=$hw
    elif [ ! -e "$hc" ] && [ ! -L "$hc" ]; then zw=$hw; fi
    [ "$zw" = 1 ] || zw=
    if [ -n "$zr$zw" ]; then
      zt=$(stat -c %.9Z -- "$cT" 2>/dev/null) || zt=
      case $zt in [0-9]*.?????????) zk='%.9Z'; zt=${zt%.*};; *) zk='%z'; zt=$(date +%s 2>/dev/null);; esac
      case $zt in ''|*[!0-9]*) zt=0; zw=;; esac
      zf="%Z|%d:%i:%s:$zk|$zf"; zk=1; true > "$cT/hn"
    fi
  fi
  printf '%s\n' "ps1() { tr '\\n' '\\000' < \"\$cT/mp\$1\" | xargs -0 stat -c '$zf' > \"\$cT/ms\$1\" 2>/dev/null; }" \
    'if [ "$pp" = 1 ]; then ps1 0; else k=0; while [ $k -lt "$pp" ]; do ps1 $k & k=$((k+1)); done; wait; fi' > "$cT/ps"
  printf '%s\n' \
    'pn() { tr '\''\n'\'' '\''\000'\'' < "$cT/mr" | xargs -0 stat -c '\''%u' '%U' '%g' '%G'\'' > "$cT/mn" 2>/dev/null; }' \
    'ph() {' \
    '  if [ -s "$cT/mhl$1" ]; then' \
    '    tr '\''\n'\'' '\''\000'\'' < "$cT/mhl$1" | xargs -0 sha256sum > "$cT/mh$1" 2>/dev/null ||' \
    '      while IFS= read -r p; do v=$(sha256sum < "$p" 2>/dev/null) || v=; printf '\''%s\n'\'' "${v%% *}"; done < "$cT/mhl$1" > "$cT/mh$1"' \
    '  else true > "$cT/mh$1"; fi' \
    '}' \
    'if [ "$pp" = 1 ]; then pn; ph 0; else' \
    '  pn & k=0; while [ $k -lt "$pp" ]; do ph $k & k=$((k+1)); done; wait' \
    'fi' > "$cT/ph"
  pa $pp
  if [ -n "$zw" ] && [ -s "$cT/hn" ]; then
    zn=$(umask 077; mktemp "$hc.XXXXXX" 2>/dev/null) && { cat -- "$cT/hn" > "$zn" && mv -f -- "$zn" "$hc" || rm -f -- "$zn"; } 2>/dev/null
  fi
  while IFS= read -r x; do pmx "$x"; done < "$cT/mu"
  cz
  while IFS='	' read -r i s d; do f Q; f "$i"; st "$s" "$d"; f ''; done < "$cT/mt"
  while IFS='	' read -r i p; do f Q; f "$i"; f content; fc "$p"; f ''; done < "$cT/mc"
}
"#;

/// Extra helpers for fix scripts: exact-length reads from stdin and atomic file writes, file
/// by file (uploads with odd names, and nodes without awk; the usual way is [`BULK_PRELUDE`]).
///
/// A batch of uploads costs a constant number of processes per target directory, none per
/// file: `wf` registers each file and prepares a private staging directory beside its target
/// that `mktemp -d` makes fresh (0700, never one that already exists: a planted one would let
/// its owner read or swap what is staged), creating the empty staged file under umask 077 so a
/// bad name fails that file only, and refuses a target behind a symlinked parent the repo does
/// not manage (`wl`). `wt` then unpacks the directory's files from one tar archive read from
/// stdin (exactly its length, with `head -c`; `tar -o -m`, mode 0600, under umask 077; GNU
/// tar with `--overwrite`, which writes into the staged file instead of unlinking it and
/// allocating a new inode: ten times the CPU on ext4 for a directory of new files). `wv`
/// checks every upload with one `sha256sum`, `wm`/`wo` chmod/chown per distinct mode/owner
/// (still inside the private directory, so the final mode is set before the file appears),
/// `wy` flushes each staging directory's file system with one `sync -f` (syncfs; plain `sync`
/// where `-f` is missing), and `wr` renames them into place with one `mv` per directory (each
/// rename atomic) and removes the staging directory. Every file gets exactly one `X` record; a
/// batch command that fails is retried file by file so the failure lands on the right item.
/// Staging directories still there when the script is stopped by a signal are removed on exit;
/// after SIGKILL the next probe finds them (`st`).
const FIX_PRELUDE: &str = r#"g=0; head --version 2>/dev/null | grep -q GNU && g=1
to=; tar --version 2>/dev/null | grep -q GNU && to=--overwrite
bk=0; cm=$(umask); nk=0
trap 'wz; [ -z "$cT" ] || rm -rf -- "$cT"' EXIT
trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 141' PIPE; trap 'exit 143' TERM
wz() { while [ $nk -gt 0 ]; do eval "s=\$sd$nk"; case $s in /*) rm -rf -- "$s";; esac; nk=$((nk-1)); done; }
wx() { eval "s=\$cs$1"; [ -z "$s" ] || rm -f -- "$s"; eval "cs$1="; f X; f "$1"; f "${3:-1}"; f "$2"; }
wf() { umask 077; wf_ "$@"; umask "$cm"; }
wf_() {
  i=$1 p=$2 x=$3 k=$4; shift 4
  eval "cs$i= cl$i=$# ck$i=$k"
  d=${p%/*}; d=${d:-/}
  if ! wl "$p" "$@"; then wx "$i" "$wlr"; return; fi
  [ -d "$d" ] || { wx "$i" "parent directory $d does not exist (manage it with a directory item, or create it)"; return; }
  [ $k -le $nk ] || nk=$k
  eval "s=\$sd$k"
  if [ -z "$s" ]; then
    if s=$(mktemp -d "${d%/}/.cinch-tmp-XXXXXXXXXXXXXXXX" 2>&1); then eval "sd$k=\$s"
    else eval "sd$k=- se$k=\$s"; s=-; fi
  fi
  if [ "$s" = - ]; then
    eval "e=\$se$k"; wx "$i" "cannot create a private staging directory in $d: $e"; return
  fi
  w=$s/${p##*/}
  if ! { true > "$w"; } 2>/dev/null; then
    e=$( { true > "$w"; } 2>&1 ); wx "$i" "cannot create the file: ${e:-error}"; return
  fi
  eval "cs$i=\$w cq$i=\$p cx$i=\$x"
}
wt() {
  k=$1 n=$2; shift 2; eval "s=\$sd$k"
  case $s in /*) ;; *) take "$n" >/dev/null 2>&1; return 0;; esac
  if [ $bk = 1 ]; then
    take "$n" >/dev/null 2>&1
    for i do eval "w=\$cs$i"; [ -z "$w" ] || wx "$i" "not written: an earlier upload in this batch failed"; done
    return 0
  fi
  umask 077
  e=$(take "$n" | { tar $to -x -m -o -f - -C "$s" 2>&1 >/dev/null; cat >/dev/null; })
  umask "$cm"; eval "te$k=\$e"
}
wv() {
  ids=$*; n0=$#; hr=1; nl=0
  for i do
    eval "s=\$cs$i"; [ -n "$s" ] || continue
    set -- "$@" "$s"; case $s in *"$cN"*) nl=1;; esac
  done
  shift $n0
  if [ $# -gt 0 ] && [ $nl = 0 ] && ctmp; then sha256sum -- "$@" > "$cT/h" 2>/dev/null && hr=0; fi
  if [ $hr = 0 ]; then wvl 3< "$cT/h"; else wvl; fi
}
wvl() {
  for i in $ids; do
    eval "s=\$cs$i h=\$cx$i"; [ -n "$s" ] || continue
    if [ $hr = 0 ]; then IFS= read -r v <&3 || v=; v=${v#\\}
    else v=$(sha256sum 2>/dev/null < "$s") || v=; fi
    [ "${v%% *}" = "$h" ] || { bk=1; eval "tk=\$ck$i"; eval "te=\$te$tk"; wx "$i" "upload incomplete (checksum mismatch)${te:+: $te}" 3; }
  done
}
wc_() {
  c=$1; a=$2; shift 2; ids=$*; n0=$#
  for i do eval "s=\$cs$i"; [ -z "$s" ] || set -- "$@" "$s"; done
  shift $n0
  [ $# -gt 0 ] || return 0
  "$c" "$a" "$@" 2>/dev/null && return 0
  for i in $ids; do
    eval "s=\$cs$i"; [ -n "$s" ] || continue
    e=$("$c" "$a" "$s" 2>&1) || wx "$i" "$e"
  done
}
wm() {
  a=$1; shift
  [ "$a" != - ] || a=$(printf '%o' $(( 0666 & ~0$cm )))
  wc_ chmod "$a" "$@"
}
wo() { wc_ chown "$@"; }
wy() {
  n0=$#; ld=
  for i do
    eval "s=\$cs$i"; [ -n "$s" ] && [ "${s%/*}" != "$ld" ] || continue
    ld=${s%/*}; set -- "$@" "$s"
  done
  shift $n0
  [ $# = 0 ] || sync -f "$@" 2>/dev/null || sync
}
wr() {
  k=$1; shift; ids=$*; n0=$#; d=
  for i do
    eval "s=\$cs$i p=\$cq$i l=\$cl$i"; [ -n "$s" ] || continue
    if [ "$l" = 0 ] && ! wl "$p"; then wx "$i" "$wlr"; continue; fi
    if [ -L "$p" ] || { [ -e "$p" ] && [ ! -f "$p" ]; }; then e=$(rm -rf -- "$p" 2>&1) || { wx "$i" "$e"; continue; }; fi
    d=${p%/*}; set -- "$@" "$s"
  done
  shift $n0; e=
  [ $# = 0 ] || e=$(mv -f -- "$@" "$d/" 2>&1)
  for i in $ids; do
    eval "s=\$cs$i"
    if [ -z "$s" ]; then :
    elif [ -e "$s" ] || [ -L "$s" ]; then wx "$i" "${e:-could not rename the new file into place}"
    else f X; f "$i"; f 0; f ''; fi
    unset "cs$i" "cq$i" "cx$i" "cl$i" "ck$i"
  done
  eval "s=\$sd$k"; case $s in /*) rm -rf -- "$s";; esac; eval "sd$k= se$k= te$k="
}
rmu() { rm -rf -- "$1"; }
"#;

/// Bulk uploads: the same steps as [`FIX_PRELUDE`]'s `wf` … `wr`, but a constant number of
/// processes per wave, per directory and per distinct mode or owner, and no shell work per
/// file.
///
/// `wb LEN` reads a manifest of LEN bytes from stdin: per group of files (one directory and
/// the same managed symlinked parents) a line `g K ARCHIVE_LEN DIR [LINK...]`, then one line
/// per file `f IDX K HASH MODE OWNER PATH` (tab-separated; `-` for the node's default mode or
/// no chown), the group's tar archive following the manifest on stdin in group order. `wgq`
/// checks each group's directory once (`wl`, exists), makes its private staging directory
/// (`mktemp -d`, umask 077) and unpacks its archive there (one `tar`). Then `wa` (one `awk`
/// program in three modes) lists the staged files for ONE `sha256sum` (via `xargs -0`), sorts
/// the verified ones into one list per distinct mode, owner and directory (at most 8 open at
/// once: a ninth closes them all, rather than closing each after every line), and prints every
/// `X` record at the end; `wbx` runs one `chmod`/`chown` per list (file by file only when it
/// fails, so the failure lands on its item); ONE `sync -f` per file system (`stat -c %d` of
/// the staging directories); `wbr` renames each directory's files with `mv` via `xargs -0`
/// (each rename atomic; file by file, replacing a directory or symlink in the way, only when
/// it fails). Failures are written to `$wd/e` (`IDX RC MESSAGE`, one line each); a missing
/// staged file is "cannot create the file" with tar's message, a wrong hash "upload
/// incomplete" (and no later upload of the script is written, as with `wv`).
///
/// A node without awk, `xargs -0`, or a temp directory gets `wbl`: it reads the same manifest
/// in the shell and runs the per-file helpers group by group.
const BULK_PRELUDE: &str = r#"bn=0; nb=0; xz=
trap 'wz; wzb; [ -z "$cT" ] || rm -rf -- "$cT"' EXIT
wzb() { while [ $nb -gt 0 ]; do eval "s=\$sb$nb"; case $s in /*) rm -rf -- "$s";; esac; nb=$((nb-1)); done; }
wbc() {
  [ -n "$xz" ] || { xz=0; [ "$(printf 'a\000' | xargs -0 echo 2>/dev/null)" = a ] && xz=1; }
  [ $xz = 1 ]
}
wb() {
  bn=$((bn+1))
  if [ $aw = 1 ] && ctmp && wbc && mkdir -- "$cT/b$bn" 2>/dev/null; then
    wd=$cT/b$bn; take "$1" > "$wd/w"; wbq
  else wbl "$1"; fi
}
wbs() {
  oi=$IFS; IFS='	'; set -f; set -- $1; set +f; IFS=$oi
  "$wsf" "$@"
}
wge() {
  m=$3; case $m in *"$cN"*|*"	"*) m=$(printf '%s' "$m" | tr '\t\n' '  ');; esac
  printf '%s\t%s\t%s\n' "$1" "$2" "$m" >> "$4"
}
wgq() {
  k=$2 n=$3 d=$4; shift 4
  if [ $bk = 1 ]; then e="not written: an earlier upload in this batch failed"
  elif ! wl "$d/x" "$@"; then e=$wlr
  elif [ ! -d "$d" ]; then e="parent directory $d does not exist (manage it with a directory item, or create it)"
  else
    umask 077
    if s=$(mktemp -d "${d%/}/.cinch-tmp-XXXXXXXXXXXXXXXX" 2>&1); then
      nb=$((nb+1)); eval "sb$nb=\$s"
      e=$(take "$n" | { tar $to -x -m -o -f - -C "$s" 2>&1 >/dev/null; cat >/dev/null; })
      umask "$cm"; wge "$k" "$s" "$e" "$wd/g"; return
    fi
    umask "$cm"; e="cannot create a private staging directory in $d: $s"
  fi
  take "$n" >/dev/null 2>&1; wge "$k" - "$e" "$wd/g"
}
wa() {
  awk -F '\t' -v M="$1" -v D="$wd" -v DM="$wdm" '
    function nf(s) { return length(s) ":" s "," }
    function put(f, l) { if (!(f in op)) { if (no >= 8) { for (g in op) close(g); split("", op); no = 0 } op[f] = 1; no++ } print l >> f }
    BEGIN {
      G = D "/g"; while ((getline x < G) > 0) { split(x, a, "\t"); gs[a[1]] = a[2]; gm[a[1]] = a[3] }
      if (M == 2) { H = D "/h"; while ((getline x < H) > 0) h[substr(x, 67)] = substr(x, 1, 64) }
      if (M == 3) { E = D "/e"; while ((getline x < E) > 0) { split(x, a, "\t"); er[a[1]] = a[2]; em[a[1]] = a[3] } }
    }
    $1 == "g" { gd[$2] = $4; gl[$2] = (NF > 4) ? 1 : 0; next }
    $1 != "f" { next }
    { ok = (gs[$3] ~ /^\//); b = $7; sub(/.*\//, "", b); sp = gs[$3] "/" b }
    M == 1 { if (ok) print sp; next }
    M == 2 {
      if (!ok) next
      if (!(sp in h)) { print $2 "\t1\tcannot create the file: " (gm[$3] != "" ? gm[$3] : "error") >> (D "/e"); next }
      if (h[sp] != $4) { print $2 "\t3\tupload incomplete (checksum mismatch)" (gm[$3] != "" ? ": " gm[$3] : "") >> (D "/e"); print "" > (D "/bk"); next }
      m = ($5 == "-") ? DM : $5
      if (!(m in mi)) { mi[m] = ++nm; print nm "\t" m > (D "/mi") }
      put(D "/m" mi[m], $2 "\t" sp)
      if ($6 != "-") { if (!($6 in oi)) { oi[$6] = ++nw; print nw "\t" $6 > (D "/oi") } put(D "/o" oi[$6], $2 "\t" sp) }
      if (!($3 in ri)) { ri[$3] = 1; print $3 "\t" gl[$3] "\t" gd[$3] > (D "/ri") }
      put(D "/r" $3, $2 "\t" sp)
    }
    M == 3 {
      if ($2 in er) { rc = er[$2]; m = em[$2] } else if (!ok) { rc = 1; m = gm[$3] } else { rc = 0; m = "" }
      printf "1:X,%s%s%s", nf($2), nf(rc), nf(m)
    }' "$wd/w"
}
wbx() {
  cut -f2- "$3" | tr '\n' '\000' | xargs -0 "$1" "$2" 2>/dev/null && return 0
  while IFS='	' read -r i p <&3; do
    [ -e "$p" ] || continue
    e=$("$1" "$2" "$p" 2>&1) || { wge "$i" 1 "$e" "$wd/e"; rm -f -- "$p"; }
  done 3< "$3"
}
wbr() {
  rl=$wd/r$1
  if [ -s "$wd/e" ]; then
    awk -F '\t' -v E="$wd/e" 'BEGIN { while ((getline x < E) > 0) { split(x, a, "\t"); b[a[1]] = 1 } } !($1 in b)' "$rl" > "$rl.k"; rl=$rl.k
  fi
  if [ "$2" = 0 ] && ! wl "$3/x"; then
    while IFS='	' read -r i p <&3; do wge "$i" 1 "$wlr" "$wd/e"; done 3< "$rl"; return 0
  fi
  cut -f2- "$rl" | tr '\n' '\000' | xargs -0 sh -c 'mv -f -- "$@" "$0"' "${3%/}/" 2>/dev/null && return 0
  while IFS='	' read -r i p <&3; do
    [ -e "$p" ] || [ -L "$p" ] || continue
    t=${3%/}/${p##*/}
    if [ -L "$t" ] || { [ -e "$t" ] && [ ! -f "$t" ]; }; then
      e=$(rm -rf -- "$t" 2>&1) || { wge "$i" 1 "$e" "$wd/e"; continue; }
    fi
    e=$(mv -f -- "$p" "${3%/}/" 2>&1) || wge "$i" 1 "${e:-could not rename the new file into place}" "$wd/e"
  done 3< "$rl"
}
wbq() {
  : > "$wd/g"; : > "$wd/e"
  wsf=wgq; awk -F '\t' '$1 == "g"' "$wd/w" > "$wd/gl"
  while IFS= read -r x <&3; do wbs "$x"; done 3< "$wd/gl"
  wdm=$(printf '%o' $(( 0666 & ~0$cm )))
  wa 1 | tr '\n' '\000' | xargs -0 sha256sum > "$wd/h" 2>/dev/null
  wa 2
  [ ! -f "$wd/bk" ] || bk=1
  if [ -f "$wd/mi" ]; then while IFS='	' read -r n m <&3; do wbx chmod "$m" "$wd/m$n"; done 3< "$wd/mi"; fi
  if [ -f "$wd/oi" ]; then while IFS='	' read -r n m <&3; do wbx chown "$m" "$wd/o$n"; done 3< "$wd/oi"; fi
  awk -F '\t' '$2 ~ /^\// { print $2 }' "$wd/g" > "$wd/s"
  if [ -s "$wd/s" ]; then
    tr '\n' '\000' < "$wd/s" | xargs -0 stat -c '%d %n' 2>/dev/null | awk '!($1 in d) { d[$1] = 1; sub(/^[^ ]* /, ""); print }' > "$wd/sy"
    if [ -s "$wd/sy" ]; then tr '\n' '\000' < "$wd/sy" | xargs -0 sync -f 2>/dev/null || sync; else sync; fi
  fi
  if [ -f "$wd/ri" ]; then while IFS='	' read -r k l d <&3; do wbr "$k" "$l" "$d"; done 3< "$wd/ri"; fi
  wa 3
  [ ! -s "$wd/s" ] || tr '\n' '\000' < "$wd/s" | xargs -0 rm -rf --
  nb=0; rm -rf -- "$wd"
}
wbl() {
  wbm=$(take "$1"; echo x); wbm=${wbm%x}; gx=
  while IFS= read -r x <&3; do
    case $x in
      g"	"*) wbg; gx=$x; gi=; wsf=wbh; wbs "$x";;
      f"	"*) wsf=wbf; wbs "$x";;
    esac
  done 3<<EOF
$wbm
EOF
  wbg
}
wbh() { gn=$3; }
wbf() {
  j=$2 h=$4 m=$5 o=$6 p=$7
  eval "wbd$j=\$m wbo$j=\$o"; gi="$gi $j"
  oi=$IFS; IFS='	'; set -f; set -- $gx; set +f; IFS=$oi; shift 4
  wf "$j" "$p" "$h" 1 "$@"
}
wbg() {
  [ -n "$gx" ] || return 0
  wt 1 "$gn" $gi
  wv $gi
  for j in $gi; do
    eval "m=\$wbd$j o=\$wbo$j"; wm "$m" "$j"; [ "$o" = - ] || wo "$o" "$j"
  done
  wy $gi; wr 1 $gi; gx=
}
"#;

/// Start of a first command that may settle a steady node in one round trip: the probe output
/// goes to a private temp file (in the `mktemp -d` directory of the prelude) so it can be
/// digested before it is sent. Without a temp directory the probe prints as usual.
const STEADY_HEAD: &str = r#"zo=0
if ctmp && { : > "$cT/o"; } 2>/dev/null; then exec 5>&1 >>"$cT/o"; zo=1; fi
"#;

/// Digests stdin with whichever SHA-256 tool the node has (GNU/busybox, Perl, OpenSSL, BSD);
/// then sends the captured probe output (`cat` in the background, beside the digest).
const STEADY_DIGEST: &str = r#"zdg() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256
  elif command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r
  elif command -v sha256 >/dev/null 2>&1; then sha256 -q
  else return 1; fi
}
zd=; zs=0
zc=
if [ $zo = 1 ]; then
  exec 1>&5 5>&-
  cat -- "$cT/o" & zc=$!
  zd=$( { printf '%s' "$o"; cat -- "$cT/o"; } | zdg 2>/dev/null ) || zd=
  zd=${zd%% *}
  case $zd in *[!0-9a-f]*) zd=;; esac
  [ ${#zd} = 64 ] || zd=
fi
"#;

/// A generated script plus the bytes to feed it on stdin.
#[derive(Debug, Default)]
pub struct Script {
    text: String,
    stdin: Vec<u8>,
    /// Names of the item-specific helpers defined so far (see [`Script::helper`]).
    helpers: Vec<&'static str>,
    /// Path probes registered since the last `cz` (see [`Script::probe_path`]).
    pending: usize,
    /// File probes since the last flush, as data for `pm`: one line per item, its `pf`
    /// arguments separated by tabs (see [`Script::probe_path`]).
    manifest: Vec<u8>,
}

/// Path probes per `cz`: bounds the argument list of `stat`/`sha256sum` (ARG_MAX) and the
/// quadratic cost of growing `"$@"` in the shell.
const BATCH: usize = 256;

impl Script {
    /// A script that can probe items.
    pub fn probe() -> Self {
        Script {
            text: PRELUDE.to_string(),
            stdin: Vec::new(),
            helpers: Vec::new(),
            pending: 0,
            manifest: Vec::new(),
        }
    }

    /// A script that can fix items (and re-probe them).
    pub fn fix() -> Self {
        let mut s = Script::probe();
        s.text.push_str(FIX_PRELUDE);
        s.text.push_str(BULK_PRELUDE);
        s
    }

    /// Defines shell helper `name` (its `body` is fixed text owned by an item type) unless
    /// this script already has it, so item types keep their shell beside their code and
    /// scripts only carry the helpers they use.
    pub fn helper(&mut self, name: &'static str, body: &str) {
        if !self.helpers.contains(&name) {
            self.helpers.push(name);
            self.raw(body);
        }
    }

    /// Appends a call of a prelude function with every argument quoted (a path probe counts
    /// as [`Script::probe_path`]).
    pub fn call(&mut self, func: &str, args: &[&str]) {
        if matches!(func, "pf" | "pd" | "ps") {
            self.probe_path(func, args);
        } else {
            // Whatever it does (a write of the next wave), pending probes see the node first.
            self.flush();
            self.push_call(func, args);
        }
    }

    fn push_call(&mut self, func: &str, args: &[&str]) {
        self.text.push_str(func);
        for a in args {
            self.text.push(' ');
            self.text.push_str(&quote(a));
        }
        self.text.push('\n');
    }

    /// Appends a path probe (`pf`, `pd`, `ps`): it prints its `P` record where it stands, and
    /// its `stat`/`sha256` arrive in a `Q` record when the batch is read (at the next fix
    /// step, `unless`, or the end of the script), one `stat` and one `sha256sum` per batch.
    ///
    /// A file probe (`pf`) whose path is absolute and whose arguments hold no tab or newline
    /// travels as one line of data on stdin instead of a line of shell: `pm` reads all of them
    /// at once (see [`PRELUDE`]), so the shell does no work per file.
    pub fn probe_path(&mut self, func: &str, args: &[&str]) {
        let as_data = func == "pf"
            && args.len() >= 5
            && args[1].starts_with('/')
            && args
                .iter()
                .all(|a| !a.is_empty() && !a.contains(['\t', '\n']));
        if as_data {
            self.manifest.extend_from_slice(args.join("\t").as_bytes());
            self.manifest.push(b'\n');
            return;
        }
        self.push_call(func, args);
        self.pending += 1;
        if self.pending >= BATCH {
            self.text.push_str("cz\n");
            self.pending = 0;
        }
    }

    /// Reads the registered path probes now, before anything may change them.
    fn flush(&mut self) {
        if self.pending > 0 {
            self.text.push_str("cz\n");
            self.pending = 0;
        }
        if !self.manifest.is_empty() {
            let data = std::mem::take(&mut self.manifest);
            self.text.push_str(&format!("pm {}\n", data.len()));
            self.stdin.extend_from_slice(&data);
        }
    }

    /// Completes the script: reads pending path probes. [`Script::into_command`] does it.
    pub fn finish(&mut self) {
        self.flush();
    }

    /// Appends shell built by the caller (already quoted through [`quote`]).
    pub fn raw(&mut self, shell: &str) {
        self.text.push_str(shell);
        if !shell.ends_with('\n') {
            self.text.push('\n');
        }
    }

    /// Appends a fix step: `snippet` runs in a subshell; its exit code and output become an
    /// `X` record for item `idx`.
    pub fn fix_step(&mut self, idx: usize, snippet: &str) {
        self.flush();
        self.text.push_str("e=$( {\n");
        self.text.push_str(snippet);
        self.text.push_str(&format!(
            "\n}} 2>&1 ); r=$?; f X; f {idx}; f \"$r\"; f \"$e\"\n"
        ));
    }

    /// Appends bytes for the script's stdin (consumed in order by `wf` calls).
    pub fn push_stdin(&mut self, bytes: &[u8]) {
        self.stdin.extend_from_slice(bytes);
    }

    /// Runs `command` (user shell, quoted here) as `unless` of item `idx`: a `U` record.
    pub fn unless(&mut self, idx: usize, command: &str) {
        self.flush();
        self.text.push_str(&format!(
            "f U; f {idx}; ( cd / && sh -c {} ) </dev/null >/dev/null 2>&1; f \"$?\"\n",
            quote(command)
        ));
    }

    /// Runs the caller's prologue first; a non-zero exit stops the script after the `L` record.
    pub fn prologue(&mut self, shell: &str) {
        self.flush();
        self.text.push_str("o=$( {\n");
        self.text.push_str(shell);
        self.text
            .push_str("\n} 2>&1 ); r=$?; f L; f \"$r\"; f \"$o\"; [ \"$r\" = 0 ] || exit 0\n");
    }

    /// Lets the big file probes (`pm`) of this script trust the node's hash cache at `path`
    /// (a private file in the lock directory: `SHA256 DEV:INODE:SIZE:CTIME` per line) for
    /// files whose device, inode, size and change time are unchanged, and (`write`, only
    /// while the hard lock is held) rewrite it. A file's change time moves with every write,
    /// so only entries at least two seconds older than the probe are kept (as git's index).
    pub fn hash_cache(&mut self, path: &str, write: bool) {
        self.flush();
        self.text
            .push_str(&format!("hc={}; hw={}\n", quote(path), u8::from(write)));
    }

    /// Starts capturing the probe output (call right after [`Script::prologue`]); finish
    /// with [`Script::steady_end`].
    pub fn steady_begin(&mut self) {
        self.flush();
        self.text.push_str(STEADY_HEAD);
    }

    /// Reads the pending probes, sends the captured probe output while it digests it with the
    /// prologue's output (`$zd`, empty when the node cannot), runs `check` (caller shell that
    /// sets `zs=1` when it released the lock; only when there is a digest and awk), then
    /// prints the `D` record (after the probe output: records are matched by kind, not order).
    pub fn steady_end(&mut self, check: &str) {
        self.flush();
        self.text.push_str(STEADY_DIGEST);
        self.text
            .push_str("if [ -n \"$zd\" ] && [ $aw = 1 ]; then\n");
        self.text.push_str(check);
        if !check.ends_with('\n') {
            self.text.push('\n');
        }
        self.text.push_str(
            "fi\n[ -z \"$zc\" ] || wait \"$zc\"\nf D; f \"$zd\"; f \"$zs\"\nif [ $zo = 1 ]; then rm -f -- \"$cT/o\"; fi\n",
        );
    }

    /// The script so far (path probes still pending are not read yet: see [`Script::finish`]).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Splits into the transport command.
    pub fn into_command(mut self) -> crate::transport::Command {
        self.finish();
        crate::transport::Command {
            script: self.text,
            stdin: if self.stdin.is_empty() {
                None
            } else {
                Some(self.stdin)
            },
            timeout: None,
            cleanup: false,
        }
    }
}

/// The shell of one action run: `S` on stdout first if `unless` succeeded (nothing ran),
/// otherwise `R` followed by the command's own stdout.
pub fn action_command(
    command: &str,
    unless: Option<&str>,
    stdin: Option<Vec<u8>>,
) -> crate::transport::Command {
    let mut text = String::new();
    if let Some(u) = unless {
        text.push_str(&format!(
            "if ( sh -c {} ) </dev/null >/dev/null 2>&1; then printf S; exit 0; fi\n",
            quote(u)
        ));
    }
    text.push_str(&format!("printf R; exec sh -c {}\n", quote(command)));
    crate::transport::Command {
        script: text,
        stdin: Some(stdin.unwrap_or_default()),
        timeout: None,
        cleanup: false,
    }
}

/// One record of a script's output.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Actual state of an item, as (key, value) fields in the order printed.
    Probe { idx: usize, fields: Fields },
    /// Result of a fix.
    Fix {
        idx: usize,
        rc: i32,
        message: String,
    },
    /// Exit code of an `unless`.
    Unless { idx: usize, rc: i32 },
    /// Result of the prologue.
    Prologue { rc: i32, output: Vec<u8> },
    /// The steady check of a first command ([`Script::steady_end`]): the digest of its
    /// prologue and probe output (`None`: the node could not make one) and whether the
    /// check released the lock.
    Steady {
        digest: Option<String>,
        released: bool,
    },
}

/// The (key, value) fields of a probe record; keys may repeat (`extra` per unmanaged entry).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fields(pub Vec<(String, Vec<u8>)>);

impl Fields {
    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `key` as (lossy) text.
    pub fn text(&self, key: &str) -> Option<String> {
        self.get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<&[u8]> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
            .collect()
    }
}

/// Why a script's output could not be read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable answer from the node at byte {offset}: {what}")]
pub struct ParseError {
    pub offset: usize,
    pub what: String,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> ParseError {
        ParseError {
            offset: self.pos,
            what: what.into(),
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn next(&mut self) -> Result<&'a [u8], ParseError> {
        let rest = &self.buf[self.pos..];
        let colon = rest
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| self.err("missing length"))?;
        let len: usize = std::str::from_utf8(&rest[..colon])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| self.err("bad length"))?;
        let start = colon + 1;
        if rest.len() < start + len + 1 || rest[start + len] != b',' {
            return Err(self.err("truncated field (did a file change while it was read?)"));
        }
        self.pos += start + len + 1;
        Ok(&rest[start..start + len])
    }

    fn text(&mut self) -> Result<String, ParseError> {
        Ok(String::from_utf8_lossy(self.next()?).into_owned())
    }

    fn num<T: std::str::FromStr>(&mut self) -> Result<T, ParseError> {
        let t = self.text()?;
        t.trim()
            .parse()
            .map_err(|_| self.err(&format!("expected a number, got {t:?}")))
    }
}

/// Reads every record of a script's stdout.
pub fn parse(stdout: &[u8]) -> Result<Vec<Record>, ParseError> {
    let mut r = Reader {
        buf: stdout,
        pos: 0,
    };
    let mut out = Vec::new();
    // Position in `out` of the latest `P` record per item, for its `Q` record.
    let mut probes = std::collections::HashMap::new();
    while !r.done() {
        let tag = r.next()?;
        match tag {
            b"P" | b"Q" => {
                let idx = r.num()?;
                let mut fields = Vec::new();
                loop {
                    let k = r.text()?;
                    if k.is_empty() {
                        break;
                    }
                    let v = r.next()?.to_vec();
                    fields.push((k, v));
                }
                let earlier = if tag == b"Q" {
                    probes.get(&idx).and_then(|&at| match out.get_mut(at) {
                        Some(Record::Probe { fields, .. }) => Some(fields),
                        _ => None,
                    })
                } else {
                    None
                };
                match earlier {
                    Some(Fields(have)) => have.extend(fields),
                    None => {
                        probes.insert(idx, out.len());
                        out.push(Record::Probe {
                            idx,
                            fields: Fields(fields),
                        });
                    }
                }
            }
            b"X" => {
                let idx = r.num()?;
                let rc = r.num()?;
                let message = r.text()?;
                out.push(Record::Fix { idx, rc, message });
            }
            b"U" => {
                let idx = r.num()?;
                let rc = r.num()?;
                out.push(Record::Unless { idx, rc });
            }
            b"L" => {
                let rc = r.num()?;
                let output = r.next()?.to_vec();
                out.push(Record::Prologue { rc, output });
            }
            b"D" => {
                let digest = r.text()?;
                let released: u8 = r.num()?;
                out.push(Record::Steady {
                    digest: (!digest.is_empty()).then_some(digest),
                    released: released == 1,
                });
            }
            other => {
                return Err(r.err(&format!(
                    "unknown record {:?}",
                    String::from_utf8_lossy(other)
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_sh(shell: &str, script: &mut Script) -> Vec<u8> {
        run_sh_with_path(shell, script, None)
    }

    /// [`run_sh`] with `PATH` set to `path` (to put stand-in tools first).
    fn run_sh_with_path(shell: &str, script: &mut Script, path: Option<&str>) -> Vec<u8> {
        use std::io::Write;
        script.finish();
        let mut cmd = std::process::Command::new(shell);
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
        let mut child = cmd
            .arg("-c")
            .arg(script.text())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&script.stdin).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap().stdout
    }

    #[test]
    fn probe_reads_odd_names_in_dash_and_bash() {
        let dir = tempfile::tempdir().unwrap();
        let odd = [
            "a b",
            "it's",
            "back`tick`",
            "new\nline",
            "ünï",
            "-dash",
            ".hidden",
            "..dots",
        ];
        for n in odd {
            std::fs::write(dir.path().join(n), n).unwrap();
        }
        std::fs::write(dir.path().join("keep"), "x").unwrap();
        let d = dir.path().to_str().unwrap();
        for shell in ["dash", "bash"] {
            let mut s = Script::probe();
            s.call("pd", &["0", d, "1", "keep"]);
            s.call(
                "pf",
                &["1", &format!("{d}/new\nline"), "nohash", "100", "0"],
            );
            s.call("pf", &["2", &format!("{d}/missing"), "nohash", "100", "0"]);
            s.call("ps", &["3", &format!("{d}/a b")]);
            let recs = parse(&run_sh(shell, &mut s)).unwrap();
            // File probes with plain paths are read together at the end: find each by index.
            let recs: Vec<Record> = (0..4)
                .map(|i| {
                    recs.iter()
                        .find(|r| matches!(r, Record::Probe { idx, .. } if *idx == i))
                        .cloned()
                        .unwrap_or_else(|| panic!("{shell}: no record {i}: {recs:?}"))
                })
                .collect();
            let Record::Probe { idx: 0, fields } = &recs[0] else {
                panic!("{recs:?}")
            };
            let mut extra: Vec<String> = fields
                .all("extra")
                .iter()
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
                .collect();
            extra.sort();
            let mut want: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(extra, want, "{shell}");
            let Record::Probe { idx: 1, fields } = &recs[1] else {
                panic!()
            };
            assert_eq!(fields.text("type").as_deref(), Some("file"));
            assert_eq!(fields.get("content"), Some(&b"new\nline"[..]));
            let Record::Probe { idx: 2, fields } = &recs[2] else {
                panic!()
            };
            assert!(fields.get("type").is_none());
            let Record::Probe { idx: 3, fields } = &recs[3] else {
                panic!()
            };
            assert_eq!(fields.text("type").as_deref(), Some("file"));
        }
    }

    /// One batch mixing every kind of path a file probe meets: the hashes must stay with
    /// their items even when a file cannot be read (that batch falls back to one process per
    /// file) and a FIFO must not be read at all.
    #[test]
    fn batched_probe_keeps_each_items_state_in_dash_and_bash() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("one"), "1\n").unwrap();
        std::fs::write(d.join("new\nline"), "nl\n").unwrap();
        std::fs::write(d.join("back\\slash"), "bs\n").unwrap();
        std::fs::write(d.join("two"), "2\n").unwrap();
        std::fs::create_dir(d.join("a dir")).unwrap();
        std::os::unix::fs::symlink(d.join("one"), d.join("link")).unwrap();
        std::os::unix::fs::symlink(d.join("nowhere"), d.join("dangling")).unwrap();
        let fifo = d.join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let p = |n: &str| d.join(n).to_str().unwrap().to_string();
        type Case = (String, Option<&'static str>, Option<&'static [u8]>);
        let cases: Vec<Case> = vec![
            (p("one"), Some("file"), Some(b"1\n")),
            (p("missing"), None, None),
            (p("a dir"), Some("directory"), None),
            (p("link"), Some("symlink"), None),
            (p("dangling"), Some("symlink"), None),
            (p("fifo"), Some("other"), None),
            (p("new\nline"), Some("file"), Some(b"nl\n")),
            (p("back\\slash"), Some("file"), Some(b"bs\n")),
            (p("two"), Some("file"), Some(b"2\n")),
        ];
        // A regular file sha256sum cannot read: mode 000 for a normal user; for root (who
        // reads anything) a write-only sysctl.
        use std::os::unix::fs::MetadataExt;
        let locked = d.join("locked");
        std::fs::write(&locked, "x").unwrap();
        std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000))
            .unwrap();
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let unreadable = if root {
            "/proc/sys/vm/drop_caches"
        } else {
            locked.to_str().unwrap()
        };
        for shell in ["dash", "bash"] {
            for with_unreadable in [false, true] {
                let mut s = Script::probe();
                // A name with a newline makes the batch hash file by file; leave it out of the
                // unreadable variant so that one exercises the fallback after a failed batch.
                let skip = |path: &str| with_unreadable && path.contains('\n');
                for (i, (path, _, _)) in cases.iter().enumerate() {
                    if !skip(path) {
                        s.probe_path("pf", &[&i.to_string(), path, "-", "0", "0"]);
                    }
                }
                if with_unreadable {
                    s.probe_path("pf", &[&cases.len().to_string(), unreadable, "-", "0", "0"]);
                }
                let recs = parse(&run_sh(shell, &mut s)).unwrap();
                let by_idx = |i: usize| {
                    recs.iter()
                        .find_map(|r| match r {
                            Record::Probe { idx, fields } if *idx == i => Some(fields.clone()),
                            _ => None,
                        })
                        .unwrap_or_else(|| panic!("{shell}: no record {i}: {recs:?}"))
                };
                for (i, (path, ty, content)) in cases.iter().enumerate() {
                    if skip(path) {
                        continue;
                    }
                    let f = by_idx(i);
                    assert_eq!(f.text("type").as_deref(), *ty, "{shell} {path:?}");
                    assert_eq!(f.get("stat").is_some(), ty.is_some(), "{shell} {path:?}");
                    let want = content.map(crate::diff::sha256_hex);
                    assert_eq!(f.text("sha256"), want, "{shell} {path:?}");
                    if let (Some(stat), Some(c)) = (f.text("stat"), content) {
                        assert!(stat.ends_with(&format!("/{}", c.len())), "{stat}");
                    }
                }
                if with_unreadable {
                    let f = by_idx(cases.len());
                    assert_eq!(f.text("type").as_deref(), Some("file"));
                    assert!(f.get("sha256").is_none(), "{shell}: {f:?}");
                }
            }
        }
    }

    /// Staging directories of a SIGKILLed apply stayed beside their targets forever: the probe
    /// reports them (verify) or removes them (apply), but only old ones of this user.
    #[test]
    fn stale_staging_is_reported_or_removed_in_dash_and_bash() {
        for shell in ["dash", "bash"] {
            for scan in ["1", "2"] {
                let dir = tempfile::tempdir().unwrap();
                let d = dir.path();
                let old = d.join(".cinch-tmp-0123456789abcdef");
                std::fs::create_dir(&old).unwrap();
                std::fs::write(old.join("f"), "copy").unwrap();
                let young = d.join(".cinch-tmp-young");
                std::fs::create_dir(&young).unwrap();
                let ago = std::process::Command::new("touch")
                    .args(["-d", "1 hour ago"])
                    .arg(&old)
                    .status()
                    .unwrap();
                assert!(ago.success());
                // Newer than the script: another apply may be writing it right now.
                let later = std::process::Command::new("touch")
                    .args(["-d", "1 hour"])
                    .arg(&young)
                    .status()
                    .unwrap();
                assert!(later.success());
                let f = d.join("f");
                let mut s = Script::probe();
                s.probe_path("pf", &["0", f.to_str().unwrap(), "-", "0", scan]);
                let recs = parse(&run_sh(shell, &mut s)).unwrap();
                let Record::Probe { fields, .. } = &recs[0] else {
                    panic!("{recs:?}")
                };
                let stale: Vec<&[u8]> = fields.all("stale");
                if scan == "1" {
                    assert_eq!(stale, vec![old.to_str().unwrap().as_bytes()], "{shell}");
                    assert!(old.exists(), "{shell}: verify removes nothing");
                } else {
                    assert!(stale.is_empty(), "{shell}: {stale:?}");
                    assert!(!old.exists(), "{shell}: apply removes it");
                }
                assert!(young.exists(), "{shell}");
            }
        }
    }

    /// More path probes than one batch holds: every item still gets its own hash.
    #[test]
    fn probes_beyond_one_batch_are_all_read() {
        let dir = tempfile::tempdir().unwrap();
        let n = BATCH + 40;
        let mut s = Script::probe();
        for i in 0..n {
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, i.to_string()).unwrap();
            s.probe_path(
                "pf",
                &[&i.to_string(), path.to_str().unwrap(), "-", "0", "0"],
            );
        }
        let recs = parse(&run_sh("dash", &mut s)).unwrap();
        assert_eq!(recs.len(), n);
        for r in recs {
            let Record::Probe { idx, fields } = r else {
                panic!("{r:?}")
            };
            assert_eq!(
                fields.text("sha256"),
                Some(crate::diff::sha256_hex(idx.to_string().as_bytes()))
            );
        }
    }

    /// The SHA-256 of the prologue's output (`acquired`) and of the probe output that follows
    /// the `L` record and ends with the `D` record (`1:D,64:{d},1:1,`), which closes the answer.
    fn digest_between_l_and_d(out: &[u8], d: &str) -> String {
        let (l, mark) = (b"1:L,1:0,8:acquired,", format!("1:D,64:{d},1:1,"));
        assert!(out.starts_with(l), "{}", String::from_utf8_lossy(out));
        assert!(
            out.ends_with(mark.as_bytes()),
            "{}",
            String::from_utf8_lossy(out)
        );
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        h.update(b"acquired");
        h.update(&out[l.len()..out.len() - mark.len()]);
        hex::encode(h.finalize())
    }

    /// A `PATH` whose first directory (`dir/bin`) holds a stand-in `tool` running `body`.
    fn stand_in_path(dir: &std::path::Path, tool: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let shim = bin.join(tool);
        std::fs::write(&shim, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// Probes of `n` files in `dir` (content `i`), every other one with content kept for a
    /// diff (limit 100) and a different expected hash, so the probe sends its content.
    fn many_file_probes(dir: &std::path::Path, n: usize) -> Script {
        for i in 0..n {
            std::fs::write(dir.join(format!("f {i}|x")), i.to_string()).unwrap();
        }
        let mut s = Script::probe();
        add_file_probes(&mut s, dir, n);
        s
    }

    /// The probes of [`many_file_probes`] without writing the files.
    fn add_file_probes(s: &mut Script, dir: &std::path::Path, n: usize) {
        for i in 0..n {
            let path = dir.join(format!("f {i}|x"));
            let limit = if i % 2 == 0 { "100" } else { "0" };
            s.probe_path(
                "pf",
                &[&i.to_string(), path.to_str().unwrap(), "-", limit, "0"],
            );
        }
    }

    fn sha_of(recs: &[Record], i: usize) -> Option<String> {
        recs.iter().find_map(|r| match r {
            Record::Probe { idx, fields } if *idx == i => fields.text("sha256"),
            _ => None,
        })
    }

    fn check_many(recs: &[Record], n: usize, what: &str) {
        assert_eq!(
            recs.iter()
                .filter(|r| matches!(r, Record::Probe { .. }))
                .count(),
            n
        );
        for r in recs {
            let Record::Probe { idx, fields } = r else {
                panic!("{what}: {r:?}")
            };
            let want = idx.to_string();
            assert_eq!(fields.text("type").as_deref(), Some("file"), "{what}");
            assert_eq!(
                fields.text("sha256"),
                Some(crate::diff::sha256_hex(want.as_bytes())),
                "{what}"
            );
            let stat = fields.text("stat").unwrap_or_default();
            assert_eq!(stat.split('/').count(), 6, "{what}: {stat}");
            assert!(
                stat.ends_with(&format!("/{}", want.len())),
                "{what}: {stat}"
            );
            let content = fields.get("content");
            if idx % 2 == 0 {
                assert_eq!(content, Some(want.as_bytes()), "{what}");
            } else {
                assert_eq!(content, None, "{what}");
            }
        }
    }

    /// A manifest of 256 KB or more is hashed on every CPU (`nproc`, at most 4): the awk deals
    /// the files out over one list per CPU and reads their hashes back in the same turn, so
    /// no file may get another's hash. A stand-in `nproc` saying 3 takes that path on any
    /// machine, and says it was asked.
    #[test]
    fn big_probe_hashed_on_several_cpus_keeps_each_files_state_in_dash_and_bash() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(200));
        std::fs::create_dir(&deep).unwrap();
        let asked = dir.path().join("nproc-asked");
        let path = stand_in_path(
            dir.path(),
            "nproc",
            &format!(": > '{}'\necho 3", asked.display()),
        );
        let n = 1300;
        for shell in ["dash", "bash"] {
            let _ = std::fs::remove_file(&asked);
            let mut s = many_file_probes(&deep, n);
            s.finish();
            assert!(
                s.stdin.len() >= 262_144,
                "manifest of {} bytes",
                s.stdin.len()
            );
            let recs = parse(&run_sh_with_path(shell, &mut s, Some(&path))).unwrap();
            assert!(asked.exists(), "{shell}: the CPUs were not counted");
            check_many(&recs, n, shell);
        }
    }

    /// A steady probe of 20,000 files spent a quarter of its time hashing 5 MB it had hashed
    /// before. A big probe now takes a file's hash from the node's cache when the file's
    /// device, inode, size and change time are those of the entry, and only then: a file
    /// written since (same size) is hashed again, one changed in the two seconds before the
    /// probe is not cached, and a cache that is a symlink or another user's is neither read
    /// nor written through.
    #[test]
    fn hash_cache_is_trusted_only_for_files_unchanged_since_in_dash_and_bash() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let n = 1300;
        let shells = ["dash", "bash"];
        let deep = |shell: &str| dir.path().join(shell).join("d".repeat(200));
        for shell in shells {
            std::fs::create_dir_all(deep(shell)).unwrap();
            drop(many_file_probes(&deep(shell), n));
        }
        // Only files unchanged for two seconds before a probe are cached.
        std::thread::sleep(std::time::Duration::from_millis(2200));
        let sha = |s: &str| crate::diff::sha256_hex(s.as_bytes());
        for shell in shells {
            let cache = dir.path().join(format!("hashes-{shell}"));
            let probe = |write: bool| {
                let mut s = Script::probe();
                s.hash_cache(cache.to_str().unwrap(), write);
                add_file_probes(&mut s, &deep(shell), n);
                s.finish();
                assert!(s.stdin.len() >= 262_144, "a big probe");
                parse(&run_sh(shell, &mut s)).unwrap()
            };
            let file = |i: usize| deep(shell).join(format!("f {i}|x"));
            let key = |i: usize| {
                let m = std::fs::metadata(file(i)).unwrap();
                format!(
                    "{}:{}:{}:{}.{:09}",
                    m.dev(),
                    m.ino(),
                    m.size(),
                    m.ctime(),
                    m.ctime_nsec()
                )
            };
            // A probe that holds the lock writes the cache: every file, its own hash, 0600.
            check_many(&probe(true), n, shell);
            let text = std::fs::read_to_string(&cache).unwrap();
            assert_eq!(text.lines().count(), n, "{shell}");
            let entry = format!("{} {}", sha("9"), key(9));
            assert!(text.lines().any(|l| l == entry), "{shell}: no {entry}");
            let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{shell}");

            // The next probe believes it (a poisoned entry shows through)…
            let poison = "0".repeat(64);
            std::fs::write(
                &cache,
                text.replace(&entry, &format!("{poison} {}", key(9))),
            )
            .unwrap();
            assert_eq!(sha_of(&probe(false), 9), Some(poison.clone()), "{shell}");
            // …but not for a file written since, even with the same size.
            std::fs::write(file(9), "x").unwrap();
            assert_eq!(sha_of(&probe(false), 9), Some(sha("x")), "{shell}");

            // A file changed within two seconds of the probe is left out of the cache.
            std::fs::write(file(9), "y").unwrap();
            probe(true);
            let text = std::fs::read_to_string(&cache).unwrap();
            assert_eq!(text.lines().count(), n - 1, "{shell}");
            assert!(!text.contains(&key(9)), "{shell}");

            // A symlink in the cache's place is neither believed nor written through.
            let decoy = dir.path().join(format!("decoy-{shell}"));
            let entry = format!("{} {}", sha("8"), key(8));
            std::fs::write(
                &decoy,
                text.replace(&entry, &format!("{poison} {}", key(8))),
            )
            .unwrap();
            let before = std::fs::read(&decoy).unwrap();
            std::fs::remove_file(&cache).unwrap();
            std::os::unix::fs::symlink(&decoy, &cache).unwrap();
            assert_eq!(sha_of(&probe(true), 8), Some(sha("8")), "{shell}");
            assert!(cache.symlink_metadata().unwrap().file_type().is_symlink());
            assert_eq!(std::fs::read(&decoy).unwrap(), before, "{shell}");

            // Nor is a cache another user owns (it could have been planted).
            std::fs::remove_file(&cache).unwrap();
            std::fs::write(&cache, &before).unwrap();
            std::os::unix::fs::chown(&cache, Some(65534), Some(65534))
                .expect("this test runs as root, to give the cache to another user");
            assert_eq!(sha_of(&probe(true), 8), Some(sha("8")), "{shell}");
            assert_eq!(std::fs::read(&cache).unwrap(), before, "{shell}");
            assert_eq!(std::fs::metadata(&cache).unwrap().uid(), 65534, "{shell}");
        }
    }

    /// A node of 20 files started 31 processes for a steady apply, most of them the bulk
    /// probe's awk pipeline (a dozen whatever the number of files, `xargs` feeding `stat` and
    /// `sha256sum`). A manifest under 16 KB is now read by the shell (`stat` and `sha256sum`
    /// called once with the paths as arguments, no `xargs`), with the same states; a bigger one
    /// still takes the pipeline.
    #[test]
    fn small_probe_reads_its_manifest_in_the_shell_not_the_awk_pipeline_in_dash_and_bash() {
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("xargs-calls");
        let real = String::from_utf8(
            std::process::Command::new("sh")
                .args(["-c", "command -v xargs"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let path = stand_in_path(
            dir.path(),
            "xargs",
            &format!(
                "echo x >> '{}'\nexec '{}' \"$@\"",
                calls.display(),
                real.trim()
            ),
        );
        for shell in ["dash", "bash"] {
            for n in [20, 600] {
                let _ = std::fs::remove_file(&calls);
                let mut s = many_file_probes(dir.path(), n);
                s.finish();
                let big = s.stdin.len() >= 16_384;
                assert_eq!(big, n == 600, "{} bytes", s.stdin.len());
                let recs = parse(&run_sh_with_path(shell, &mut s, Some(&path))).unwrap();
                check_many(&recs, n, shell);
                let xargs = std::fs::read_to_string(&calls)
                    .unwrap_or_default()
                    .lines()
                    .count();
                if big {
                    assert!(xargs > 0, "{shell}: the big probe takes the awk pipeline");
                } else {
                    assert_eq!(xargs, 0, "{shell}: {n} files");
                }
            }
        }
    }

    /// The probe of 20,000 files spent most of its time in dash itself: one generated line
    /// of shell (a function call, an `eval` per variable, a growing `"$@"`) per file. File
    /// probes are now data on stdin, read by one `awk` and one `stat`/`sha256sum` each (via
    /// `xargs -0`): the script is the same size for 3 files as for 600, and each file gets
    /// its own state, user and group names included.
    #[test]
    fn file_probes_travel_as_data_not_as_generated_shell() {
        let dir = tempfile::tempdir().unwrap();
        let mut small = many_file_probes(dir.path(), 3);
        small.finish();
        let mut big = many_file_probes(dir.path(), 600);
        big.finish();
        assert_eq!(small.text().lines().count(), big.text().lines().count());
        assert!(
            big.text().len() - small.text().len() < 8,
            "only the number in `pm LEN` grows"
        );
        assert!(big.stdin.len() > 600 * dir.path().as_os_str().len());
        let user = String::from_utf8(
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        for shell in ["dash", "bash"] {
            let mut s = many_file_probes(dir.path(), 600);
            let recs = parse(&run_sh(shell, &mut s)).unwrap();
            check_many(&recs, 600, shell);
            let Record::Probe { fields, .. } = &recs[0] else {
                panic!()
            };
            let stat = fields.text("stat").unwrap_or_default();
            assert_eq!(stat.split('/').nth(3), Some(user.trim()), "{shell}: {stat}");
        }
    }

    /// A node without awk (or without `xargs -0`/`stat -c`) reads the same data in the shell,
    /// file by file, with the same result.
    #[test]
    fn file_probes_without_awk_give_the_same_state_in_dash_and_bash() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for tool in [
            "stat",
            "sha256sum",
            "xargs",
            "tr",
            "mktemp",
            "rm",
            "head",
            "grep",
            "wc",
            "cat",
            "find",
            "readlink",
            "dd",
            "id",
        ] {
            let found = std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap();
            let at = String::from_utf8(found.stdout).unwrap();
            assert!(
                found.status.success(),
                "this test needs `{tool}` (install coreutils/findutils/grep)"
            );
            std::os::unix::fs::symlink(at.trim(), bin.join(tool)).unwrap();
        }
        let files = dir.path().join("files");
        std::fs::create_dir(&files).unwrap();
        for shell in ["dash", "bash"] {
            let found = std::process::Command::new("sh")
                .args(["-c", &format!("command -v {shell}")])
                .output()
                .unwrap();
            let shell_at = String::from_utf8(found.stdout).unwrap();
            let mut s = many_file_probes(&files, 300);
            s.finish();
            let mut child = std::process::Command::new(shell_at.trim())
                .env("PATH", &bin)
                .arg("-c")
                .arg(s.text())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&s.stdin).unwrap();
            let out = child.wait_with_output().unwrap();
            check_many(&parse(&out.stdout).unwrap(), 300, shell);
        }
    }

    #[test]
    fn q_records_extend_the_latest_p_record() {
        let recs =
            parse(b"1:P,1:3,4:type,4:file,0:,1:Q,1:3,4:stat,1:x,0:,1:Q,1:4,1:k,1:v,0:,").unwrap();
        assert_eq!(
            recs,
            vec![
                Record::Probe {
                    idx: 3,
                    fields: Fields(vec![
                        ("type".into(), b"file".to_vec()),
                        ("stat".into(), b"x".to_vec())
                    ])
                },
                Record::Probe {
                    idx: 4,
                    fields: Fields(vec![("k".into(), b"v".to_vec())])
                }
            ]
        );
    }

    #[test]
    fn parse_rejects_truncated_output() {
        assert!(parse(b"1:P,1:0,4:ty").is_err());
        assert!(parse(b"x").is_err());
        assert_eq!(parse(b"").unwrap(), vec![]);
    }

    #[test]
    fn steady_envelope_digests_exactly_the_lock_and_probe_answer_in_dash_and_bash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let f = dir.path().join("f");
        for shell in ["dash", "bash"] {
            let mut s = Script::probe();
            s.prologue("echo acquired");
            s.steady_begin();
            s.call("pf", &["0", f.to_str().unwrap(), "nohash", "100", "0"]);
            s.steady_end("zs=1");
            let out = run_sh(shell, &mut s);
            let recs = parse(&out).unwrap();
            let Some(Record::Steady {
                digest: Some(d),
                released: true,
            }) = recs.iter().find(|r| matches!(r, Record::Steady { .. }))
            else {
                panic!("{shell}: no steady record: {recs:?}");
            };
            assert!(
                recs.iter()
                    .any(|r| matches!(r, Record::Probe { idx: 0, .. }))
            );
            // Between the L record and the D record at the end is the probe output the digest
            // covers, with the prologue's output in front.
            assert_eq!(*d, digest_between_l_and_d(&out, d), "{shell}");
        }
    }

    /// Runs a steady envelope (prologue `echo acquired`, one file probe, check `zs=1`) in sh
    /// with only the basic tools and `extra` on PATH; returns its stdout.
    fn envelope_with_tools(extra: &[&str]) -> Vec<u8> {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for tool in ["mktemp", "cat", "stat", "rm", "awk"].iter().chain(extra) {
            let real = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| std::path::Path::new(d).join(tool))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("{tool} is needed (coreutils, mawk, openssl, perl)"));
            std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
        }
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let mut s = Script::probe();
        s.prologue("echo acquired");
        s.steady_begin();
        s.call("pf", &["0", f.to_str().unwrap(), "", "0", "0"]);
        s.steady_end("zs=1");
        s.finish();
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(s.text())
            .env("PATH", &bin)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"").unwrap();
        child.wait_with_output().unwrap().stdout
    }

    #[test]
    fn steady_envelope_digests_with_openssl_or_shasum_and_without_any_tool_keeps_the_lock() {
        let out = envelope_with_tools(&[]);
        let recs = parse(&out).unwrap();
        assert!(
            recs.contains(&Record::Steady {
                digest: None,
                released: false
            }),
            "no digest tool: {recs:?}"
        );
        assert!(
            recs.iter()
                .any(|r| matches!(r, Record::Probe { idx: 0, .. }))
        );
        for tool in ["openssl", "shasum"] {
            let out = envelope_with_tools(&[tool]);
            let recs = parse(&out).unwrap();
            let Some(Record::Steady {
                digest: Some(d),
                released: true,
            }) = recs.iter().find(|r| matches!(r, Record::Steady { .. }))
            else {
                panic!("{tool}: {recs:?}");
            };
            assert_eq!(*d, digest_between_l_and_d(&out, d), "{tool}");
        }
    }
}
