<?php

/*
 * The application's autoloader: what vendor/autoload.php is in a Composer install.
 *
 * Debian's Laravel (php-laravel-framework) autoloads through a chain of ~80 small per-package
 * loaders; each class miss walks the chain, which costs about a third of php-fpm's throughput.
 * `php setup.php` merges them into one classmap (what `composer dump-autoload -o` gives) at
 * storage/framework/classmap.php. Without it, the Debian chain plus a PSR-4 loader for App\ is used.
 */

$classmap = __DIR__ . '/../storage/framework/classmap.php';

if (is_file($classmap)) {
    /** @var array{classes: array<string, string>, files: list<string>} $generated */
    $generated = require $classmap;
    $classes = $generated['classes'];
    // Keys are lower-case: PHP class names are case-insensitive, and so were Debian's maps.
    spl_autoload_register(static function (string $class) use ($classes): void {
        $file = $classes[strtolower($class)] ?? null;
        if ($file !== null) {
            require $file;
        }
    });
    foreach ($generated['files'] as $file) {
        require_once $file;
    }
    unset($generated, $classes, $file);
} else {
    require_once '/usr/share/php/Illuminate/autoload.php';
    spl_autoload_register(static function (string $class): void {
        if (strncmp($class, 'App\\', 4) === 0) {
            $file = __DIR__ . '/../app/' . str_replace('\\', '/', substr($class, 4)) . '.php';
            if (is_file($file)) {
                require $file;
            }
        }
    });
}
unset($classmap);
