<?php

namespace App\Http\Controllers;

use Illuminate\Http\JsonResponse;

class HelloController extends Controller
{
    /** GET /json */
    public function json(): JsonResponse
    {
        return response()->json([
            'message' => 'Hello from Laravel',
            'laravel' => app()->version(),
        ]);
    }
}
