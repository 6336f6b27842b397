<?php

return [

    'default' => env('DB_CONNECTION', 'sqlite'),

    'connections' => [

        // storage/database.sqlite is created (with its one row) by `php setup.php`.
        'sqlite' => [
            'driver' => 'sqlite',
            'url' => env('DATABASE_URL'),
            'database' => env('DB_DATABASE', storage_path('database.sqlite')),
            'prefix' => '',
            'foreign_key_constraints' => env('DB_FOREIGN_KEYS', true),
        ],

    ],

    'migrations' => 'migrations',

];
