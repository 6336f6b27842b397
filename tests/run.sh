#!/bin/sh
# Runs every test: unit tests (plain and under ASan+UBSan), the PHP library self-tests, and
# the integration tests against the real binary with real php-cli workers.
# Prints one summary line per part and, last, "N passed, M failed".
set -u
cd "$(dirname "$0")/.."
passed=0
failed=0
log=build/test-logs
mkdir -p "$log"

count() { # reads "... N passed, M failed" from the last matching line of a file
    line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1)
    if [ -z "$line" ]; then
        echo "  (no summary line: counted as 1 failure)"
        failed=$((failed + 1))
        return
    fi
    echo "  $line"
    p=$(echo "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')
    f=$(echo "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')
    passed=$((passed + p))
    failed=$((failed + f))
}

run_part() { # name, command...
    name=$1
    shift
    out="$log/$(echo "$name" | tr ' /' '__').log"
    echo "== $name"
    "$@" >"$out" 2>&1
    rc=$?
    count "$out"
    if [ $rc -ne 0 ]; then
        echo "  exit status $rc; see $out"
        grep -E 'FAIL|failed|ERROR|Assertion|runtime error|LeakSanitizer' "$out" | grep -v ' 0 failed' | head -n 20 | sed 's/^/    /'
        # a crash without a summary must still count as a failure
        if ! grep -qE '[0-9]+ passed, [1-9][0-9]* failed' "$out"; then
            failed=$((failed + 1))
        fi
    fi
}

for t in build/tests/test_*; do
    [ -x "$t" ] && run_part "unit $(basename "$t")" "$t"
done
for t in build/tests-asan/test_*; do
    [ -x "$t" ] && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        run_part "unit+asan $(basename "$t")" "$t"
done
run_part "php selftest" php tests/php/selftest.php
run_part "php drive" php tests/php/drive.php
run_part "integration" python3 tests/integration/run.py

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
