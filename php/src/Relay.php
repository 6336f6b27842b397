<?php

declare(strict_types=1);

namespace Forkline;

/**
 * Frame transport between the worker and the server.
 *
 *  - pipes:             read frames from STDIN, write them to STDOUT (default)
 *  - unix:///path       connect to a unix socket the server listens on
 *  - tcp://host:port    connect to a TCP socket the server listens on
 *
 * Every frame is written with a single fwrite() (spec §14.1). Reads loop
 * until the whole header / options / payload has arrived, so short reads on
 * pipes and sockets are harmless.
 */
final class Relay
{
    private const CONNECT_ATTEMPTS = 11;
    private const CONNECT_PAUSE_US = 100;
    /** Frames bigger than this are read by readBig() (smaller ones: one buffered fread). */
    private const BIG_FRAME = 65536;
    /** stream_set_read_buffer() size when buffering is back on (PHP's default chunk). */
    private const READ_BUFFER = 8192;

    /** @var resource|null */
    private $in;
    /** @var resource|null */
    private $out;

    /**
     * @param resource|null $in
     * @param resource|null $out
     * @param string|null $address socket address to connect to lazily (when $in/$out are null)
     * @param bool $pipes true for blocking pipes (enables PING on streamed responses, spec §5.2)
     */
    private function __construct(
        $in,
        $out,
        private readonly ?string $address,
        private readonly bool $pipes,
        private readonly bool $verifyCrc,
    ) {
        $this->in = $in;
        $this->out = $out;
    }

    /**
     * Relay from an RR_RELAY-style string: "pipes", "unix:///path", "tcp://host:port".
     * With no argument the RR_RELAY environment variable is used (default "pipes").
     */
    public static function create(?string $dsn = null, bool $verifyCrc = true): self
    {
        if ($dsn === null) {
            $env = getenv('RR_RELAY');
            $dsn = is_string($env) && $env !== '' ? $env : ($_SERVER['RR_RELAY'] ?? $_ENV['RR_RELAY'] ?? 'pipes');
        }
        $dsn = trim((string) $dsn);
        if ($dsn === '' || $dsn === 'pipes') {
            return self::pipes($verifyCrc);
        }
        if (!preg_match('#^(tcp|unix)://([^:]+)(?::(\d+))?$#', $dsn, $m)) {
            throw new RelayException("unsupported connection format: $dsn");
        }
        if ($m[1] === 'tcp') {
            if (($m[3] ?? '') === '') {
                throw new RelayException("tcp relay needs host:port: $dsn");
            }
            $address = "tcp://{$m[2]}:{$m[3]}";
        } else {
            if (($m[3] ?? '') !== '') {
                throw new RelayException("unsupported connection format: $dsn");
            }
            $address = "unix://{$m[2]}";
        }

        return new self(null, null, $address, false, $verifyCrc);
    }

    /** Relay over this process's STDIN / STDOUT. */
    public static function pipes(bool $verifyCrc = true): self
    {
        $in = defined('STDIN') ? STDIN : fopen('php://stdin', 'rb');
        $out = defined('STDOUT') ? STDOUT : fopen('php://stdout', 'wb');
        if ($in === false || $out === false) {
            throw new RelayException('cannot open stdin/stdout');
        }

        return new self($in, $out, null, true, $verifyCrc);
    }

    /**
     * Relay over arbitrary streams (tests: php://memory, socket pairs, proc_open pipes).
     *
     * @param resource $in
     * @param resource $out
     */
    public static function fromStreams($in, $out, bool $pipes = true, bool $verifyCrc = true): self
    {
        return new self($in, $out, null, $pipes, $verifyCrc);
    }

    /** True for the blocking pipes relay (the one on which PHP sets PING while streaming). */
    public function isPipes(): bool
    {
        return $this->pipes;
    }

    public function address(): ?string
    {
        return $this->address;
    }

    /**
     * Read the next complete frame; blocks until it is there.
     *
     * This runs once per request, so it avoids the generic helpers: one fread()
     * for the header, one unpack(), the CRC check, one fread() for options and
     * payload together (the stream's read buffer usually holds the whole frame
     * after the first read, so that is one read(2) per frame). readExact() only
     * takes over after a short read (socket relays, large payloads, EOF).
     */
    public function waitFrame(): Frame
    {
        $got = $this->readFrame(false);
        \assert($got instanceof Frame);

        return $got;
    }

    /**
     * Worker::waitPayload(): like waitFrame(), but a data frame (one option, the context
     * length, spec §4) comes back as its Payload. A big one is read as context and body
     * straight from the relay, without the substr() copies of the whole payload that
     * splitting a Frame costs (a 5 MB upload: 10 MB of copying and fresh pages saved).
     */
    public function waitData(): Frame|Payload
    {
        return $this->readFrame(true);
    }

    private function readFrame(bool $split): Frame|Payload
    {
        if ($this->in === null) {
            $this->connect();
        }
        $header = @fread($this->in, Frame::HEADER_SIZE);
        if ($header === false || strlen($header) !== Frame::HEADER_SIZE) {
            $header = $this->readExact(Frame::HEADER_SIZE, true, (string) $header);
        }
        /** @var array{b:int, f:int, l:int, c:int, s:int} $h */
        $h = unpack('Cb/Cf/Vl/Vc/Cs', $header);
        $hl = $h['b'] & 0x0F;
        if ($hl < 3 || $hl > 3 + Frame::MAX_OPTIONS) {
            throw new ProtocolException("invalid header length HL=$hl");
        }
        if ($this->verifyCrc && crc32(substr($header, 0, 6)) !== $h['c']) {
            throw new ProtocolException(sprintf(
                'header CRC mismatch on received frame: got 0x%08x, expected 0x%08x (header %s)',
                $h['c'],
                crc32(substr($header, 0, 6)),
                bin2hex($header),
            ));
        }
        $optSize = 4 * ($hl - 3);
        $size = $optSize + $h['l'];
        if ($size === 0) {
            return new Frame('', [], $h['f'], $h['s']);
        }
        if ($size > self::BIG_FRAME) {
            return $this->readBig($h, $optSize, $split);
        }
        $rest = @fread($this->in, $size);
        if ($rest === false || strlen($rest) !== $size) {
            $rest = $this->readExact($size, false, (string) $rest);
        }
        if ($optSize === 4) {
            // data frames: exactly one option, the context length (spec §4)
            return new Frame(substr($rest, 4), [unpack('V', $rest)[1]], $h['f'], $h['s']);
        }
        $options = $optSize > 0 ? array_values(unpack('V*', substr($rest, 0, $optSize))) : [];

        return new Frame($optSize > 0 ? substr($rest, $optSize) : $rest, $options, $h['f'], $h['s']);
    }

    /**
     * A frame bigger than BIG_FRAME: options first, then the payload read into one string
     * of its final size (split into context and body for waitData()), so nothing is copied
     * after the read.
     *
     * @param array{f:int, l:int, s:int} $h
     */
    private function readBig(array $h, int $optSize, bool $split): Frame|Payload
    {
        $options = [];
        if ($optSize > 0) {
            $o = @fread($this->in, $optSize);
            if ($o === false || strlen($o) !== $optSize) {
                $o = $this->readExact($optSize, false, (string) $o);
            }
            $options = array_values(unpack('V*', $o));
        }
        $len = $h['l'];
        $data = $split && $optSize === 4 && ($h['f'] & Frame::CONTROL) === 0
            && ($h['s'] & (Frame::STOP | Frame::PONG)) === 0;
        if ($data && $options[0] <= $len) {
            $context = $this->readBulk($options[0]);

            return new Payload($this->readBulk($len - $options[0]), $context);
        }

        return new Frame($this->readBulk($len), $options, $h['f'], $h['s']);
    }

    /**
     * Exactly $n bytes, for big payloads: what the stream has buffered, then read(2) calls
     * straight into one string of size $n. Through the stream's read buffer PHP reads 8 KB
     * at a time and copies each piece (a 5 MB body: 640 system calls); unbuffered for this
     * read, each call takes all the pipe holds. The buffer is back on for the next header.
     */
    private function readBulk(int $n): string
    {
        if ($n === 0) {
            return '';
        }
        stream_set_read_buffer($this->in, 0);
        try {
            $s = @stream_get_contents($this->in, $n);
        } finally {
            stream_set_read_buffer($this->in, self::READ_BUFFER);
        }
        if ($s === false || strlen($s) !== $n) {
            $s = $this->readExact($n, false, (string) $s);
        }

        return $s;
    }

    /** Send one frame with a single write. */
    public function send(Frame $frame): void
    {
        $this->sendRaw($frame->encode());
    }

    /**
     * Write raw bytes (one fwrite; the loop only continues after a short write,
     * which blocking streams do not produce in practice).
     */
    public function sendRaw(string $bytes): void
    {
        if ($this->out === null) {
            $this->connect();
        }
        $len = strlen($bytes);
        $done = @fwrite($this->out, $bytes);
        if ($done === $len) {
            fflush($this->out); // no system call on pipes and sockets; user-space wrappers may buffer
            return;
        }
        if ($done === false || $done === 0) {
            $err = error_get_last()['message'] ?? 'unknown error';
            throw new RelayException("relay write failed after 0 of $len bytes: $err");
        }
        while ($done < $len) {
            $n = @fwrite($this->out, $done === 0 ? $bytes : substr($bytes, $done));
            if ($n === false || $n === 0) {
                $err = error_get_last()['message'] ?? 'unknown error';
                throw new RelayException("relay write failed after $done of $len bytes: $err");
            }
            $done += $n;
        }
        fflush($this->out);
    }

    /**
     * Whether input is waiting (a frame can be read without blocking for long).
     * $timeout in seconds; 0 polls.
     */
    public function hasPendingInput(float $timeout = 0.0): bool
    {
        $this->connect();
        $meta = stream_get_meta_data($this->in);
        if (in_array($meta['stream_type'], ['MEMORY', 'TEMP'], true)) {
            // not select()able (tests): data is pending unless we are at the end
            $stat = fstat($this->in);

            return $stat !== false && ftell($this->in) < $stat['size'];
        }
        if (($meta['wrapper_type'] ?? '') === 'user-space') {
            return !feof($this->in);
        }
        $r = [$this->in];
        $w = $e = null;
        $sec = (int) $timeout;
        $usec = (int) (($timeout - $sec) * 1_000_000);
        $n = @stream_select($r, $w, $e, $sec, $usec);

        return $n !== false && $n > 0;
    }

    public function close(): void
    {
        if ($this->address !== null) {
            if (is_resource($this->in)) {
                fclose($this->in);
            }
            $this->in = $this->out = null;
        }
    }

    private function connect(): void
    {
        if ($this->in !== null) {
            return;
        }
        $errno = 0;
        $errstr = '';
        for ($i = 0; $i < self::CONNECT_ATTEMPTS; $i++) {
            $sock = @stream_socket_client((string) $this->address, $errno, $errstr, 5.0);
            if ($sock !== false) {
                stream_set_blocking($sock, true);
                stream_set_timeout($sock, 86400 * 365);
                // the read buffer stays on (like STDIN's): one recv() usually brings a whole
                // frame, where an unbuffered stream needs one for the header and one for the rest
                stream_set_write_buffer($sock, 0);
                $this->in = $this->out = $sock;

                return;
            }
            usleep(self::CONNECT_PAUSE_US);
        }
        throw new RelayException("cannot connect to {$this->address}: [$errno] $errstr");
    }

    /**
     * Read exactly $n bytes, looping over short reads.
     *
     * @param bool $atBoundary nothing of the current frame has been read yet
     *                         (a clean EOF here is reported as RelayException::CLOSED)
     * @param string $buf bytes of these $n already read
     */
    private function readExact(int $n, bool $atBoundary, string $buf = ''): string
    {
        while (strlen($buf) < $n) {
            $chunk = @fread($this->in, $n - strlen($buf));
            if ($chunk === false) {
                $err = error_get_last()['message'] ?? 'unknown error';
                throw new RelayException('relay read failed: ' . $err);
            }
            if ($chunk === '') {
                if (feof($this->in)) {
                    if ($atBoundary && $buf === '') {
                        throw new RelayException('relay closed by peer', RelayException::CLOSED);
                    }
                    throw new RelayException(sprintf('relay closed mid-frame (%d of %d bytes)', strlen($buf), $n));
                }
                // timed out or interrupted: wait for data instead of spinning
                $r = [$this->in];
                $w = $e = null;
                @stream_select($r, $w, $e, 1);
                continue;
            }
            $buf .= $chunk;
        }

        return $buf;
    }
}
