<?php

/*
 * Prepares this app to run: `php setup.php` (idempotent, ~0.3 s; the tests and the benchmark
 * run it). Everything it writes goes to storage/, which is not under version control:
 *
 *   storage/{app,logs,framework/{cache/data,sessions,views}}   Laravel's writable directories
 *   storage/.env                    APP_KEY (a fresh random key, kept once written)
 *   storage/database.sqlite         the `greetings` table with the row /db reads
 *   storage/framework/classmap.php  one merged classmap for Debian's framework and App\ (what
 *                                   `composer dump-autoload -o` gives a Composer app)
 *   storage/framework/preload.php   an opcache.preload script: every class a request to each
 *                                   route loads, recorded by running those requests in-process
 *
 * Options: --force (rebuild the classmap and the preload script even if present).
 */

declare(strict_types=1);

const DEBIAN_AUTOLOAD = '/usr/share/php/Illuminate/autoload.php';

$base = __DIR__;
$storage = $base . '/storage';
$force = in_array('--force', $argv, true);

if (in_array('--record-preload', $argv, true)) {
    exit(recordPreload($base, $storage));
}

if (!is_file(DEBIAN_AUTOLOAD)) {
    fwrite(STDERR, "setup.php: Debian's Laravel is missing (" . DEBIAN_AUTOLOAD . "): apt-get install php-laravel-framework\n");
    exit(1);
}
foreach (['pdo_sqlite', 'mbstring', 'dom'] as $ext) {
    if (!extension_loaded($ext)) {
        fwrite(STDERR, "setup.php: PHP extension $ext is missing: apt-get install php8.2-sqlite3 php8.2-mbstring php8.2-xml\n");
        exit(1);
    }
}

foreach (['app', 'logs', 'framework/cache/data', 'framework/sessions', 'framework/views'] as $dir) {
    if (!is_dir("$storage/$dir") && !mkdir("$storage/$dir", 0775, true) && !is_dir("$storage/$dir")) {
        fwrite(STDERR, "setup.php: cannot create $storage/$dir\n");
        exit(1);
    }
}

if (!is_file("$storage/.env")) {
    writeAtomically("$storage/.env", 'APP_KEY=base64:' . base64_encode(random_bytes(32)) . "\n");
}

if (!is_file("$storage/database.sqlite")) {
    $tmp = "$storage/database.sqlite." . getmypid();
    $pdo = new PDO('sqlite:' . $tmp);
    $pdo->exec('CREATE TABLE greetings (id INTEGER PRIMARY KEY, message TEXT NOT NULL)');
    $pdo->exec("INSERT INTO greetings (id, message) VALUES (1, 'Hello from SQLite through Eloquent')");
    $pdo = null;
    rename($tmp, "$storage/database.sqlite");
}

$classmap = "$storage/framework/classmap.php";
if ($force || !is_file($classmap) || newestSource($base) > filemtime($classmap)) {
    writeAtomically($classmap, buildClassmap($base));
    @unlink("$storage/framework/preload.php");
}

$preload = "$storage/framework/preload.php";
if ($force || !is_file($preload)) {
    // A fresh process: this one has Debian's autoloader chain loaded, the recording must use
    // the classmap exactly as the servers will.
    $cmd = escapeshellarg(PHP_BINARY) . ' -d opcache.enable_cli=0 ' . escapeshellarg(__FILE__) . ' --record-preload';
    passthru($cmd, $rc);
    if ($rc !== 0) {
        fwrite(STDERR, "setup.php: recording the preload list failed ($rc)\n");
        exit(1);
    }
}

exit(0);

/**
 * Debian's loaders are closures with a `static $classes` map (lower-case class => path relative
 * to the loader's directory). Calling each once fills the map; reflection then reads it. Loaders
 * that are not of that shape (Swift Mailer's) stay registered by the files that set them up.
 */
function buildClassmap(string $base): string
{
    $before = get_included_files();
    require_once DEBIAN_AUTOLOAD;
    $classes = [];
    foreach (spl_autoload_functions() as $loader) {
        if (!$loader instanceof Closure) {
            continue;
        }
        $loader('Forkline\\Setup\\NoSuchClass');
        $fn = new ReflectionFunction($loader);
        $map = $fn->getStaticVariables()['classes'] ?? null;
        if (!is_array($map)) {
            continue;
        }
        $dir = dirname((string) $fn->getFileName());
        foreach ($map as $class => $path) {
            $classes[strtolower((string) $class)] ??= $dir . $path; // first registered loader wins
        }
    }

    // Files the chain includes for their side effects (helpers.php, functions.php, Swift's
    // loader), in inclusion order; the per-package autoload.php files are what we replace.
    $files = [];
    foreach (array_diff(get_included_files(), $before) as $file) {
        if (basename($file) !== 'autoload.php') {
            $files[] = $file;
        }
    }

    $app = realpath($base . '/app');
    $it = new RecursiveIteratorIterator(new RecursiveDirectoryIterator($app, FilesystemIterator::SKIP_DOTS));
    foreach ($it as $file) {
        if ($file->getExtension() === 'php') {
            $rel = substr($file->getPathname(), strlen($app) + 1, -4);
            $classes[strtolower('App\\' . str_replace('/', '\\', $rel))] = $file->getPathname();
        }
    }
    ksort($classes);

    return "<?php\n\n// Generated by setup.php from Debian's autoloaders and app/: do not edit.\n\nreturn "
        . var_export(['classes' => $classes, 'files' => $files], true) . ";\n";
}

/** Newest mtime under app/ (a new or changed class invalidates the classmap). */
function newestSource(string $base): int
{
    $newest = 0;
    $it = new RecursiveIteratorIterator(new RecursiveDirectoryIterator($base . '/app', FilesystemIterator::SKIP_DOTS));
    foreach ($it as $file) {
        $newest = max($newest, $file->getMTime());
    }

    return $newest;
}

/**
 * Boots the app through the classmap, sends one request to each route through the HTTP kernel,
 * and writes a preload script that loads every class this took, in the order PHP declared them.
 */
function recordPreload(string $base, string $storage): int
{
    $_SERVER['APP_RUNNING_IN_CONSOLE'] = 'false'; // as under php-fpm: same providers, same classes
    require $base . '/bootstrap/autoload.php';
    $ownBefore = array_merge(get_declared_classes(), get_declared_interfaces(), get_declared_traits());

    /** @var Illuminate\Foundation\Application $app */
    $app = require $base . '/bootstrap/app.php';
    $kernel = $app->make(Illuminate\Contracts\Http\Kernel::class);
    ob_start();
    $cookies = [];
    foreach (['/', '/json', '/web', '/db', '/session', '/session', '/pid', '/throw', '/nope'] as $uri) {
        $request = Illuminate\Http\Request::create('http://localhost' . $uri, 'GET', [], $cookies);
        $response = $kernel->handle($request);
        foreach ($response->headers->getCookies() as $cookie) {
            $cookies[$cookie->getName()] = $cookie->getValue();
        }
        $response->sendContent();
        $kernel->terminate($request, $response);
    }
    ob_end_clean();

    $generated = require $storage . '/framework/classmap.php';
    $known = $generated['classes'];
    $load = [];
    $declared = array_merge(get_declared_interfaces(), get_declared_traits(), get_declared_classes());
    foreach (array_diff($declared, $ownBefore) as $name) {
        if (isset($known[strtolower($name)])) {
            $load[] = $name;
        }
    }
    // BladeCompiler declares an anonymous subclass of Component: without its parent preloaded
    // PHP warns "Can't preload unlinked class" at every start.
    $load[] = Illuminate\View\Component::class;
    // Interfaces and traits first: every class's dependencies are then declared before it.
    $php = "<?php\n\n// Generated by setup.php: opcache.preload script for this app. Do not edit.\n\n"
        . "require __DIR__ . '/../../bootstrap/autoload.php';\n\n"
        . 'foreach (' . var_export($load, true) . " as \$name) {\n"
        . "    class_exists(\$name) || interface_exists(\$name) || trait_exists(\$name);\n}\n";
    writeAtomically($storage . '/framework/preload.php', $php);

    return 0;
}

function writeAtomically(string $path, string $data): void
{
    $tmp = $path . '.' . getmypid() . '.tmp';
    if (file_put_contents($tmp, $data) !== strlen($data) || !rename($tmp, $path)) {
        @unlink($tmp);
        fwrite(STDERR, "setup.php: cannot write $path\n");
        exit(1);
    }
}
