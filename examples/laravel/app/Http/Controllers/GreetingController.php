<?php

namespace App\Http\Controllers;

use App\Models\Greeting;
use Illuminate\Http\JsonResponse;

class GreetingController extends Controller
{
    /** GET /db: one row through Eloquent, from storage/database.sqlite. */
    public function show(): JsonResponse
    {
        $greeting = Greeting::query()->findOrFail(1);

        return response()->json($greeting->only(['id', 'message']));
    }
}
