<?php

namespace App\Http\Controllers;

use Illuminate\Http\JsonResponse;
use Illuminate\Http\Request;

class UploadController extends Controller
{
    /** POST /upload (multipart: `file`, optional `note`): describes what arrived. */
    public function store(Request $request): JsonResponse
    {
        $request->validate(['file' => 'required|file']);
        $file = $request->file('file');

        return response()->json([
            'name' => $file->getClientOriginalName(),
            'mime' => $file->getClientMimeType(),
            'size' => $file->getSize(),
            'sha1' => sha1_file($file->getRealPath()),
            'note' => $request->input('note'),
        ]);
    }
}
