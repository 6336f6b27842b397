<?php

/*
 * Create the application: the same file serves php-fpm (public/index.php) and forkline's
 * persistent workers (forkline-worker.php).
 */

// Everything Laravel generates (package/service manifests, config cache) goes to storage/, the
// one directory of this app that is not under version control.
foreach (['APP_SERVICES_CACHE' => 'services.php', 'APP_PACKAGES_CACHE' => 'packages.php'] as $__key => $__file) {
    if (!isset($_SERVER[$__key]) && getenv($__key) === false) {
        $_SERVER[$__key] = __DIR__ . '/../storage/framework/' . $__file;
    }
}
unset($__key, $__file);

$app = new Illuminate\Foundation\Application($_ENV['APP_BASE_PATH'] ?? dirname(__DIR__));

// setup.php writes the generated .env (APP_KEY) into storage/ as well.
$app->useEnvironmentPath(__DIR__ . '/../storage');

$app->singleton(Illuminate\Contracts\Http\Kernel::class, App\Http\Kernel::class);
$app->singleton(Illuminate\Contracts\Console\Kernel::class, App\Console\Kernel::class);
$app->singleton(Illuminate\Contracts\Debug\ExceptionHandler::class, App\Exceptions\Handler::class);

return $app;
