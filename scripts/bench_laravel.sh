#!/usr/bin/env bash
# Laravel benchmark: examples/laravel (Debian's Laravel 8, no Composer) served by forkline (the
# persistent-worker bridge, php/src/Laravel) and by nginx + php-fpm, in one run, on loopback.
#
#   scripts/bench_laravel.sh [--duration S] [--rounds R] [--workers N] [--mem-requests N]
#                            [--no-jit] [--quick] [--out FILE] [--keep]
#
# Every server runs the same app with the same number of PHP processes (default: nproc), the
# same merged classmap and the same opcache.preload script, OPcache on, JIT off. Two php-fpm
# baselines: "fpm" (classmap + preload: the issue's baseline) and "fpm+cache", which also has
# Laravel's config and route caches (`artisan config:cache`, `route:cache`), as a production
# php-fpm deploy does. Routes: `/` (closure) and `/json` (controller) without a middleware
# group, `/web` in the `web` group with a returning visitor's session cookie (file sessions, a
# fresh directory per server). wrk -t2 at c=8 and c=64, R rounds that rotate the servers' order,
# the median of each figure over the rounds: req/s, p50, p99 and ratios; then forkline's
# workers with the tracing JIT; then worker memory (RSS) over --mem-requests requests.
#
# Servers listen on 127.0.0.1 on free ports with configs in a temp directory; nothing of the
# system's nginx/php-fpm configuration or services is touched. nginx, php8.2-fpm and wrk are
# installed with apt-get when missing (as root). The markdown report goes to stdout (and --out).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
APP=$ROOT/examples/laravel
DURATION=10
ROUNDS=3
WORKERS=$(nproc)
MEM_REQUESTS=100000
JIT=1
OUT=""
KEEP=0
CONCURRENCY="8 64"
ROUTES="/ /json /web"

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
    --duration) DURATION=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --mem-requests) MEM_REQUESTS=$2; shift ;;
    --no-jit) JIT=0 ;;
    --quick) DURATION=3; ROUNDS=1; MEM_REQUESTS=20000 ;;
    --out) OUT=$2; shift ;;
    --keep) KEEP=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench_laravel: unknown option $1" >&2; usage >&2; exit 1 ;;
    esac
    shift
done

log() { echo "bench_laravel: $*" >&2; }
die() { log "$*"; exit 1; }

case "$APP" in *" "*) die "the checkout path must not contain spaces (server.command is split on spaces): $APP" ;; esac

# ---- dependencies -------------------------------------------------------------------------
need=""
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need="$need nginx"
[ -x /usr/sbin/php-fpm8.2 ] || need="$need php8.2-fpm"
command -v wrk >/dev/null 2>&1 || need="$need wrk"
[ -e /usr/share/php/Illuminate/autoload.php ] || need="$need php-laravel-framework"
php -r 'exit(extension_loaded("pdo_sqlite") && extension_loaded("mbstring") && extension_loaded("dom") ? 0 : 1);' ||
    need="$need php8.2-sqlite3 php8.2-mbstring php8.2-xml"
if [ -n "$need" ]; then
    [ "$(id -u)" = 0 ] || die "missing packages:$need (run as root, or: apt-get install -y$need)"
    log "installing:$need"
    # shellcheck disable=SC2086 # a list of package names
    DEBIAN_FRONTEND=noninteractive apt-get install -y $need >&2
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
FPM=/usr/sbin/php-fpm8.2
if [ ! -x "$ROOT/forkline" ]; then
    log "building forkline"
    (cd "$ROOT" && ./configure >&2 && make >&2)
fi
php "$APP/setup.php" || die "examples/laravel/setup.php failed"
PRELOAD=$APP/storage/framework/preload.php

# ---- temp dir, ports, cleanup -------------------------------------------------------------
TMP=$(mktemp -d /tmp/fl-bench-laravel.XXXXXX)
chmod 755 "$TMP" # nginx workers (www-data) reach the php-fpm sockets in here
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}
read -r PORT_FL PORT_NF PORT_NC <<<"$(free_ports 3)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date +%s)
mkdir -p "$TMP/cache" "$TMP/nginx" "$TMP/sessions-fl" "$TMP/sessions-nf" "$TMP/sessions-nc"

OPCACHE="-d opcache.enable=1 -d opcache.jit=off -d opcache.jit_buffer_size=0 -d opcache.preload=$PRELOAD -d opcache.preload_user=root -d opcache.validate_timestamps=0 -d opcache.memory_consumption=256 -d opcache.interned_strings_buffer=32 -d opcache.max_accelerated_files=20000"

# The setup check: OPcache on, this app's classes preloaded, JIT off (asked of each server).
cat >"$TMP/opcache.php" <<'EOF'
<?php
$s = opcache_get_status(false);
echo json_encode(['enabled' => $s['opcache_enabled'] ?? false, 'preloaded' => count($s['preload_statistics']['classes'] ?? []), 'jit' => $s['jit']['on'] ?? false]);
EOF

# ---- nginx + php-fpm: pool "plain" (classmap + preload), pool "cached" (+ config/route cache) ---
# The route cache is for php-fpm only: a persistent worker must not load route:cache (Laravel 8
# rebuilds the route objects from it on every request, and leaks doing so).
(cd "$APP" && export APP_CONFIG_CACHE=$TMP/cache/config.php APP_ROUTES_CACHE=$TMP/cache/routes.php \
    SESSION_FILES=$TMP/sessions-nc && php artisan config:cache >/dev/null && php artisan route:cache >/dev/null) ||
    die "artisan config:cache / route:cache failed"

cat >"$TMP/php-fpm.conf" <<EOF
[global]
pid = $TMP/php-fpm.pid
error_log = $TMP/php-fpm-error.log
daemonize = no

[plain]
listen = $TMP/fpm-plain.sock
listen.mode = 0666
listen.backlog = 4096
pm = static
pm.max_children = $WORKERS
pm.max_requests = 0
catch_workers_output = yes
env[SESSION_FILES] = $TMP/sessions-nf

[cached]
listen = $TMP/fpm-cached.sock
listen.mode = 0666
listen.backlog = 4096
pm = static
pm.max_children = $WORKERS
pm.max_requests = 0
catch_workers_output = yes
env[APP_CONFIG_CACHE] = $TMP/cache/config.php
env[APP_ROUTES_CACHE] = $TMP/cache/routes.php
EOF

# Each server block is Laravel 8's documented one (laravel.com/docs/8.x/deployment#nginx).
nginx_server() { # port pool
    cat <<EOF
  server {
    listen 127.0.0.1:$1 backlog=4096;
    root $APP/public;
    index index.php;
    charset utf-8;
    location / {
      try_files \$uri \$uri/ /index.php?\$query_string;
    }
    location = /__bench_opcache {
      fastcgi_pass unix:$TMP/fpm-$2.sock;
      fastcgi_param SCRIPT_FILENAME $TMP/opcache.php;
      include /etc/nginx/fastcgi_params;
    }
    location ~ \.php\$ {
      fastcgi_pass unix:$TMP/fpm-$2.sock;
      fastcgi_param SCRIPT_FILENAME \$realpath_root\$fastcgi_script_name;
      include /etc/nginx/fastcgi_params;
    }
  }
EOF
}
cat >"$TMP/nginx.conf" <<EOF
daemon off;
worker_processes auto;
user www-data;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/body;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  proxy_temp_path $TMP/nginx/proxy;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 65;
  sendfile on;
  client_max_body_size 16m;
  default_type application/octet-stream;
$(nginx_server "$PORT_NF" plain)
$(nginx_server "$PORT_NC" cached)
}
EOF

# shellcheck disable=SC2086
"$FPM" -F -R -y "$TMP/php-fpm.conf" -p "$TMP" $OPCACHE >"$TMP/php-fpm.out" 2>&1 &
FPM_PID=$!
PIDS+=("$FPM_PID")
for _ in $(seq 100); do [ -S "$TMP/fpm-cached.sock" ] && break; sleep 0.1; done
[ -S "$TMP/fpm-cached.sock" ] || die "php-fpm did not start: $(cat "$TMP/php-fpm.out" "$TMP/php-fpm-error.log" 2>/dev/null)"
"$NGINX" -c "$TMP/nginx.conf" -p "$TMP" -e "$TMP/nginx-error.log" >"$TMP/nginx.out" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

# ---- forkline ------------------------------------------------------------------------------
start_forkline() { # $1 = extra php -d flags (they come after $OPCACHE, so they win)
    local cmd="php $OPCACHE -d opcache.enable_cli=1 ${1:+$1 }$APP/forkline-worker.php"
    cat >"$TMP/forkline.yaml" <<EOF
version: "3"
reactors: auto
server:
  command: "$cmd"
  env:
    SESSION_FILES: $TMP/sessions-fl
logs:
  level: error
http:
  address: 127.0.0.1:$PORT_FL
  pool:
    num_workers: $WORKERS
    max_jobs: 0
    allocate_timeout: 60s
EOF
    "$ROOT/forkline" serve -c "$TMP/forkline.yaml" >>"$TMP/forkline.log" 2>&1 &
    FL_PID=$!
    PIDS+=("$FL_PID")
}
stop_forkline() {
    kill -TERM "$FL_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$FL_PID" 2>/dev/null || break; sleep 0.1; done
}
start_forkline ""

wait_up() { # url
    for _ in $(seq 200); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" 2>/dev/null)" = 200 ] && return 0
        sleep 0.1
    done
    die "no 200 from $1; logs in $TMP (use --keep): $(tail -5 "$TMP/forkline.log" "$TMP/nginx-error.log" "$TMP/php-fpm-error.log" 2>/dev/null)"
}
declare -A URL=([fl]=http://127.0.0.1:$PORT_FL [nf]=http://127.0.0.1:$PORT_NF [nc]=http://127.0.0.1:$PORT_NC)
for s in fl nf nc; do wait_up "${URL[$s]}/"; done

# Same responses everywhere, and the setup really is what it claims to be.
for r in / /json /web /db; do
    a=$(curl -s "${URL[fl]}$r")
    for s in nf nc; do
        b=$(curl -s "${URL[$s]}$r")
        [ "$a" = "$b" ] || die "different bodies for $r: forkline '$a' vs $s '$b'"
    done
done
# shellcheck disable=SC2086
OPCACHE_STATUS="forkline's php-cli workers $(php $OPCACHE -d opcache.enable_cli=1 "$TMP/opcache.php"), php-fpm $(curl -s "${URL[nf]}/__bench_opcache")"
log "opcache: $OPCACHE_STATUS"
case "$OPCACHE_STATUS" in
*'"enabled":false'* | *'"preloaded":0'* | *'"jit":true'*) die "OPcache/preload/JIT not as intended: $OPCACHE_STATUS" ;;
esac

declare -A COOKIE
visit() { # side -> Cookie header value of a visitor who has been to /web once
    local jar=$TMP/jar.$1
    curl -s -o /dev/null -c "$jar" "${URL[$1]}/web"
    COOKIE[$1]=$(awk 'NF >= 7 && ($1 !~ /^#/ || $1 ~ /^#HttpOnly_/) { printf "%s%s=%s", sep, $6, $7; sep = "; " }' "$jar")
    case "${COOKIE[$1]}" in *laravel_session=*) ;; *) die "no session cookie from $1 /web" ;; esac
}
for s in fl nf nc; do visit "$s"; done

# ---- wrk -------------------------------------------------------------------------------------
to_ms() { # 1.23ms | 456.7us | 1.2s -> ms
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
        printf "%.2f", n }'
}
# run_wrk url c duration cookie -> "rps p50 p99 errors requests"
run_wrk() {
    local out hdr=()
    [ -n "$4" ] && hdr=(-H "Cookie: $4")
    out=$(wrk -t2 -c"$2" -d"$3"s --timeout 10s --latency "${hdr[@]}" "$1")
    local rps p50 p99 err reqs
    rps=$(awk '/^Requests\/sec/ { printf "%d", $2 }' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    err=$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(",", ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' <<<"$out")
    reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
    echo "$rps $p50 $p99 $err $reqs"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
cookie_of() { # side route
    if [ "$2" = /web ]; then echo "${COOKIE[$1]}"; fi
}

# ---- processes and their CPU time -------------------------------------------------------------
children() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }
fl_workers() {
    local r w
    for r in $(children "$FL_PID"); do
        for w in $(children "$r"); do
            if grep -q forkline-worker /proc/"$w"/cmdline 2>/dev/null; then echo "$w"; fi
        done
    done
}
fpm_workers() { # pool
    local w
    for w in $(children "$FPM_PID"); do
        if grep -q "pool $1" /proc/"$w"/cmdline 2>/dev/null; then echo "$w"; fi
    done
}
php_pids() { # side -> the PHP processes serving it
    case $1 in
    fl) fl_workers ;;
    nf) fpm_workers plain ;;
    *) fpm_workers cached ;;
    esac
}
front_pids() { # side -> the HTTP front: forkline's master and reactors, or nginx's workers
    if [ "$1" = fl ]; then echo "$FL_PID"; fi
    children "$([ "$1" = fl ] && echo "$FL_PID" || echo "$NGINX_PID")"
}
HZ=$(getconf CLK_TCK)
cpu_ticks() { # pids -> utime + stime, summed, in clock ticks
    local p t=0 x
    for p in "$@"; do
        x=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' /proc/"$p"/stat 2>/dev/null || echo 0)
        t=$((t + x))
    done
    echo "$t"
}
per_request_us() { awk -v t="$1" -v n="$2" -v hz="$HZ" 'BEGIN { printf "%d", (n > 0 ? t * 1e6 / hz / n : 0) }'; }
field() { cut -d' ' -f"$2" <<<"$1"; }

declare -A RES
# shellcheck disable=SC2086 # lists of pids are word-split on purpose
measure() { # label side route c round
    local cookie php front p0 f0 out reqs
    cookie=$(cookie_of "$2" "$3")
    run_wrk "${URL[$2]}$3" "$4" 1 "$cookie" >/dev/null # warm-up
    php=$(php_pids "$2" | tr '\n' ' ')
    front=$(front_pids "$2" | tr '\n' ' ')
    p0=$(cpu_ticks $php)
    f0=$(cpu_ticks $front)
    out=$(run_wrk "${URL[$2]}$3" "$4" "$DURATION" "$cookie")
    reqs=$(field "$out" 5)
    RES[$1,$3,$4,$5]="$out $(per_request_us $(($(cpu_ticks $php) - p0)) "$reqs") $(per_request_us $(($(cpu_ticks $front) - f0)) "$reqs")"
    log "round $5: $1 $3 c=$4: ${RES[$1,$3,$4,$5]} (req/s p50 p99 errors requests php-us front-us)"
}
# over the rounds: "rps p50 p99 errors php-us front-us", medians except errors (summed)
summarize() { # label route c
    local k vals=()
    for k in $(seq "$ROUNDS"); do vals+=("${RES[$1,$2,$3,$k]}"); done
    printf '%s\n' "${vals[@]}" | awk '
        { for (i = 1; i <= 7; i++) v[i, NR] = $i; err += $4 }
        END {
            for (i = 1; i <= 7; i++) {
                n = 0
                for (j = 1; j <= NR; j++) a[++n] = v[i, j] + 0
                for (x = 1; x <= n; x++) for (y = x + 1; y <= n; y++) if (a[y] < a[x]) { t = a[x]; a[x] = a[y]; a[y] = t }
                m[i] = n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
            }
            printf "%d %.2f %.2f %d %d %d\n", m[1], m[2], m[3], err, m[6], m[7]
        }'
}

order_of() { # n -> the servers in rotated order
    case $(($1 % 3)) in
    0) echo "fl nf nc" ;;
    1) echo "nf nc fl" ;;
    *) echo "nc fl nf" ;;
    esac
}
n=0
for round in $(seq "$ROUNDS"); do
    for r in $ROUTES; do
        for c in $CONCURRENCY; do
            # rotate who goes first, so no server always runs on a warmer (or busier) machine
            for s in $(order_of $n); do measure "$s" "$s" "$r" "$c" "$round"; done
            n=$((n + 1))
        done
    done
done
declare -A MED
for s in fl nf nc; do
    for r in $ROUTES; do
        for c in $CONCURRENCY; do MED[$s,$r,$c]=$(summarize "$s" "$r" "$c"); done
    done
done

# ---- memory over N requests ------------------------------------------------------------------
rss_kb() { # pids -> "total (each ...)"
    local p tot=0 list="" kb
    for p in "$@"; do
        kb=$(awk '/^VmRSS/ { print $2 }' /proc/"$p"/status 2>/dev/null || echo 0)
        tot=$((tot + kb))
        list="$list $kb"
    done
    echo "$tot${list:+ (}${list# }${list:+)}"
}
# until_requests url cookie n -> requests sent: wrk c=8 in 5 s runs until at least n were answered
until_requests() {
    local done=0 got
    while [ "$done" -lt "$3" ]; do
        got=$(run_wrk "$1" 8 5 "$2" | cut -d' ' -f5)
        [ "${got:-0}" -gt 0 ] || die "no responses from $1 during the memory check"
        done=$((done + got))
    done
    echo "$done"
}
# shellcheck disable=SC2046 # the list of worker pids is word-split on purpose
mem_run() { # label side route workers-cmd... -> "label|requests|rss0|rss1|rss2"
    local label=$1 side=$2 route=$3 n1 n2 r0 r1 r2 cookie url
    shift 3
    cookie=$(cookie_of "$side" "$route")
    url=${URL[$side]}$route
    run_wrk "$url" 8 2 "$cookie" >/dev/null # warm-up
    r0=$(rss_kb $("$@"))
    n1=$(until_requests "$url" "$cookie" $((MEM_REQUESTS / 2)))
    r1=$(rss_kb $("$@"))
    n2=$(until_requests "$url" "$cookie" $((MEM_REQUESTS - n1)))
    r2=$(rss_kb $("$@"))
    echo "$label|$((n1 + n2))|$r0|$r1|$r2"
    log "memory $label: $((n1 + n2)) requests: RSS kB $r0 -> $r1 -> $r2"
}
MEM_LINES=()
MEM_LINES+=("$(mem_run "forkline \`/web\`" fl /web fl_workers)")
MEM_LINES+=("$(mem_run "forkline \`/json\`" fl /json fl_workers)")
MEM_LINES+=("$(mem_run "nginx + php-fpm \`/web\`" nf /web fpm_workers plain)")

# ---- tracing JIT for forkline's workers ------------------------------------------------------
if [ "$JIT" = 1 ]; then
    JIT_FLAGS="-d opcache.jit=tracing -d opcache.jit_buffer_size=64M"
    stop_forkline
    start_forkline "$JIT_FLAGS"
    wait_up "${URL[fl]}/"
    # shellcheck disable=SC2086
    JIT_STATUS=$(php $OPCACHE -d opcache.enable_cli=1 $JIT_FLAGS "$TMP/opcache.php")
    case "$JIT_STATUS" in *'"jit":true'*) ;; *) die "the tracing JIT did not come on: $JIT_STATUS" ;; esac
    visit fl
    for round in $(seq "$ROUNDS"); do
        for r in $ROUTES; do
            for c in $CONCURRENCY; do measure jit fl "$r" "$c" "$round"; done
        done
    done
    for r in $ROUTES; do
        for c in $CONCURRENCY; do MED[jit,$r,$c]=$(summarize jit "$r" "$c"); done
    done
fi

# ---- report ----------------------------------------------------------------------------------
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(($(date +%s) - T_START))
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
laravel=$(php -r 'require "/usr/share/php/Illuminate/autoload.php"; echo Illuminate\Foundation\Application::VERSION;')
{
    echo "Generated by \`scripts/bench_laravel.sh --duration $DURATION --rounds $ROUNDS --workers $WORKERS --mem-requests $MEM_REQUESTS\` on $(date -u '+%Y-%m-%d %H:%M UTC') in ${ELAPSED} s: $(nproc) × $cpu, Linux $(uname -r), PHP $(php -r 'echo PHP_VERSION;'), Laravel $laravel, $("$NGINX" -v 2>&1 | sed 's/.*: //'). Load average at start $LOAD_START, at end $LOAD_END. \`wrk -t2 -cC -d${DURATION}s --latency\` after a 1 s warm-up, $ROUNDS round(s) rotating the servers' order, median of each figure; on the same machine (wrk shares the cores with the servers). $WORKERS PHP processes per server. OPcache: $OPCACHE_STATUS."
    echo
    echo "| route | c | forkline req/s | p50 ms | p99 ms | fpm req/s | p50 ms | p99 ms | **forkline / fpm** | p99 fpm / forkline | fpm+cache req/s | p50 ms | p99 ms | **forkline / fpm+cache** |"
    echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    for r in $ROUTES; do
        for c in $CONCURRENCY; do
            a=${MED[fl,$r,$c]}
            b=${MED[nf,$r,$c]}
            d=${MED[nc,$r,$c]}
            label=$r
            [ "$r" = /web ] && label="/web (returning visitor)"
            echo "| \`$label\` | $c | $(field "$a" 1) | $(field "$a" 2) | $(field "$a" 3) | $(field "$b" 1) | $(field "$b" 2) | $(field "$b" 3) | **$(ratio "$(field "$a" 1)" "$(field "$b" 1)")×** | $(ratio "$(field "$b" 3)" "$(field "$a" 3)")× | $(field "$d" 1) | $(field "$d" 2) | $(field "$d" 3) | **$(ratio "$(field "$a" 1)" "$(field "$d" 1)")×** |"
        done
    done
    errs=""
    for k in "${!MED[@]}"; do
        e=$(field "${MED[$k]}" 4)
        [ "$e" != 0 ] && errs="$errs $k: $e;"
    done
    echo
    echo "Errors (socket errors + non-2xx, summed over the rounds):${errs:- none}"
    echo
    echo "CPU time per request in µs (utime + stime from /proc over the measured run, median over the rounds): the PHP processes, and the HTTP front (forkline's master and reactors; nginx's workers):"
    echo
    echo "| route | c | forkline PHP | forkline front | fpm PHP | nginx | fpm+cache PHP | nginx |"
    echo "|---|--:|--:|--:|--:|--:|--:|--:|"
    for r in $ROUTES; do
        for c in $CONCURRENCY; do
            line="| \`$r\` | $c"
            for s in fl nf nc; do line="$line | $(field "${MED[$s,$r,$c]}" 5) | $(field "${MED[$s,$r,$c]}" 6)"; done
            echo "$line |"
        done
    done
    if [ "$ROUNDS" -gt 1 ]; then
        echo
        echo "req/s of each round (in the order run):"
        echo
        echo "| route | c | forkline | fpm | fpm+cache |"
        echo "|---|--:|--:|--:|--:|"
        for r in $ROUTES; do
            for c in $CONCURRENCY; do
                line="| \`$r\` | $c"
                for s in fl nf nc; do
                    each=""
                    for k in $(seq "$ROUNDS"); do each="$each${each:+, }$(field "${RES[$s,$r,$c,$k]}" 1)"; done
                    line="$line | $each"
                done
                echo "$line |"
            done
        done
    fi
    if [ "$JIT" = 1 ]; then
        echo
        echo "forkline's workers with the tracing JIT (\`$JIT_FLAGS\`), run after the table above:"
        echo
        echo "| route | c | forkline + JIT req/s | p50 ms | p99 ms | PHP µs/request | vs JIT off | vs fpm |"
        echo "|---|--:|--:|--:|--:|--:|--:|--:|"
        for r in $ROUTES; do
            for c in $CONCURRENCY; do
                j=${MED[jit,$r,$c]}
                echo "| \`$r\` | $c | $(field "$j" 1) | $(field "$j" 2) | $(field "$j" 3) | $(field "$j" 5) | $(ratio "$(field "$j" 1)" "$(field "${MED[fl,$r,$c]}" 1)")× | $(ratio "$(field "$j" 1)" "$(field "${MED[nf,$r,$c]}" 1)")× |"
            done
        done
    fi
    echo
    echo "Worker memory: RSS in kB of the $WORKERS PHP processes together (each in brackets), after a warm-up, after half of the requests and after all of them (wrk c=8):"
    echo
    echo "| server, route | requests | RSS after warm-up | after half | after all |"
    echo "|---|--:|--:|--:|--:|"
    for l in "${MEM_LINES[@]}"; do
        IFS='|' read -r a n r0 r1 r2 <<<"$l"
        echo "| $a | $n | $r0 | $r1 | $r2 |"
    done
} | tee ${OUT:+"$OUT"}
