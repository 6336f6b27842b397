/* Command line: `forkline serve|stop|-t …`, with RoadRunner's global flags before or after
 * the subcommand (spec rr-config-cli-octane.md §3.1). */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "ctl.h"
#include "fl.h"
#include "log.h"
#include "logconf.h"
#include "master.h"
#include "proctitle.h"

typedef struct {
    const char *config;
    bool config_given;
    const char *workdir;
    char **overrides;
    size_t noverrides;
    bool silent, pidfile, force, test, version, help, debug, experimental, interactive;
    const char *dotenv;
    const char *command;
    char **args; /* positional arguments after the command (plugin names) */
    size_t nargs;
    const char *jobs_mode, *jobs_arg; /* jobs --list | --pause|--resume|--destroy p1,p2 */
} fl_cli_t;

static const char *progname = "forkline";

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: %s [flags] <command>\n"
            "\n"
            "Commands:\n"
            "  serve              start the server (master, reactors, PHP workers)\n"
            "  stop               stop the server whose pid is in ./.pid (see -p)\n"
            "  reload             validate the config, SIGHUP the server in ./.pid, wait for the "
            "outcome\n"
            "  reset [plugin...]  restart the PHP workers (all plugins by default), over RPC\n"
            "  workers [-i] [plugin...]  show the PHP workers (-i: refresh every second)\n"
            "  jobs --list | --pause p1,p2 | --resume p1,p2 | --destroy p1,p2\n"
            "\n"
            "reset, workers and jobs reach the server at rpc.listen of the config (and -o).\n"
            "Installed as `rr` (a symlink), the binary answers like RoadRunner's CLI.\n"
            "\n"
            "Flags (accepted before or after the command):\n"
            "  -c, --config FILE     configuration file (default .rr.yaml)\n"
            "  -w, --WorkDir DIR     working directory (default: the config file's directory)\n"
            "  -o, --override k=v    override a config value; repeatable; a,b,c makes a list\n"
            "  -t, --test            check the configuration and exit 0 (valid) or 1\n"
            "  -s, --silent          no start-up banner, no reset/stop messages\n"
            "  -p, --pid             write .pid with the master's pid\n"
            "  -f, --force           stop: force (second SIGTERM after 1 s)\n"
            "  -i, --interactive     workers: redraw every second until Ctrl-C\n"
            "      --dotenv FILE     load environment variables (DOTENV_PATH wins)\n"
            "  -e, --enable-experimental, -d, --debug   accepted\n"
            "  -v, --version         print the version\n"
            "  -h, --help            this text\n",
            progname);
}

static int flag_value(int argc, char **argv, int *i, const char *arg, const char *s, const char *l,
                      const char **out)
{
    size_t ll = strlen(l);
    if (strcmp(arg, s) == 0 || strcmp(arg, l) == 0) {
        if (*i + 1 >= argc) {
            fprintf(stderr, "%s: flag needs an argument: %s\n", progname, arg);
            exit(1);
        }
        *out = argv[++*i];
        return 1;
    }
    if (strncmp(arg, l, ll) == 0 && arg[ll] == '=') {
        *out = arg + ll + 1;
        return 1;
    }
    if (strncmp(arg, s, 2) == 0 && arg[2] && s[1] != '-') {
        *out = arg + 2; /* -cFILE */
        return 1;
    }
    return 0;
}

static void parse_cli(fl_cli_t *cli, int argc, char **argv)
{
    cli->config = ".rr.yaml";
    cli->overrides = calloc((size_t)argc + 1, sizeof(char *));
    cli->args = calloc((size_t)argc + 1, sizeof(char *));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (flag_value(argc, argv, &i, a, "-c", "--config", &v)) {
            cli->config = v;
            cli->config_given = true;
        } else if (flag_value(argc, argv, &i, a, "-w", "--WorkDir", &v)) {
            cli->workdir = v;
        } else if (flag_value(argc, argv, &i, a, "-o", "--override", &v)) {
            cli->overrides[cli->noverrides++] = (char *)v;
        } else if (flag_value(argc, argv, &i, a, "--dotenv", "--dotenv", &v)) {
            cli->dotenv = v;
        } else if (!strcmp(a, "-s") || !strcmp(a, "--silent")) {
            cli->silent = true;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--pid")) {
            cli->pidfile = true;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--force")) {
            cli->force = true;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--test")) {
            cli->test = true;
        } else if (!strcmp(a, "-e") || !strcmp(a, "--enable-experimental")) {
            cli->experimental = true;
        } else if (!strcmp(a, "-d") || !strcmp(a, "--debug")) {
            cli->debug = true;
        } else if (!strcmp(a, "-i") || !strcmp(a, "--interactive")) {
            cli->interactive = true;
        } else if (!strcmp(a, "--list") || !strcmp(a, "-l")) {
            cli->jobs_mode = "list";
        } else if (flag_value(argc, argv, &i, a, "--pause", "--pause", &v)) {
            cli->jobs_mode = "pause", cli->jobs_arg = v;
        } else if (flag_value(argc, argv, &i, a, "--resume", "--resume", &v)) {
            cli->jobs_mode = "resume", cli->jobs_arg = v;
        } else if (flag_value(argc, argv, &i, a, "--destroy", "--destroy", &v)) {
            cli->jobs_mode = "destroy", cli->jobs_arg = v;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--version")) {
            cli->version = true;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help") || !strcmp(a, "help")) {
            cli->help = true;
        } else if (a[0] == '-') {
            fprintf(stderr, "%s: unknown flag: %s\n", progname, a);
            usage(stderr);
            exit(1);
        } else if (!cli->command) {
            cli->command = a;
        } else {
            cli->args[cli->nargs++] = (char *)a; /* reset http jobs, workers http */
        }
    }
}

/* Spec §1.1: -w first; else the directory of the config file, so relative paths in it work. */
static int enter_workdir(const fl_cli_t *cli, char *abs, size_t abslen)
{
    if (cli->workdir && chdir(cli->workdir) < 0) {
        fprintf(stderr, "%s: -w %s: %s\n", progname, cli->workdir, strerror(errno));
        return -1;
    }
    if (!realpath(cli->config, abs)) {
        if (errno == ENOENT && !cli->config_given && cli->noverrides) {
            abs[0] = 0; /* no file: the overrides alone make the config */
            return 0;
        }
        fprintf(stderr, "%s: config %s: %s\n", progname, cli->config, strerror(errno));
        return -1;
    }
    (void)abslen;
    if (!cli->workdir) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", abs);
        if (chdir(dirname(dir)) < 0) {
            fprintf(stderr, "%s: cannot enter %s: %s\n", progname, dir, strerror(errno));
            return -1;
        }
    }
    return 0;
}

static int read_reload_status(unsigned *n, char *msg, size_t len)
{
    FILE *f = fopen(FL_RELOAD_STATUS_FILE, "r");
    if (!f)
        return -1;
    int ok = fscanf(f, "%u ", n) == 1 && fgets(msg, (int)len, f) != NULL;
    fclose(f);
    msg[strcspn(msg, "\n")] = 0;
    return ok ? 0 : -1;
}

/* `reload`: validate, SIGHUP the master from .pid, and wait for its verdict (written to
 * .pid.reload), so a rejected config is a non-zero exit instead of a silent log line. */
static int cmd_reload(const fl_cli_t *cli, const char *abs)
{
    fl_conf_t c;
    fl_conf_err_t err;
    if (fl_conf_load(&c, abs[0] ? abs : NULL, cli->overrides, cli->noverrides, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    fl_conf_free(&c);
    int pid = 0;
    FILE *f = fopen(".pid", "r");
    if (!f || fscanf(f, "%d", &pid) != 1 || pid <= 0) {
        fprintf(stderr, "%s: no .pid file here: start the server with `serve -p`\n", progname);
        if (f)
            fclose(f);
        return 1;
    }
    fclose(f);
    unsigned before = 0, now = 0;
    char msg[1024] = "";
    read_reload_status(&before, msg, sizeof(msg));
    if (kill(pid, SIGHUP) < 0) {
        fprintf(stderr, "%s: kill -HUP %d: %s\n", progname, pid, strerror(errno));
        return 1;
    }
    for (int i = 0; i < 1200; i++) { /* the new workers may take a while to boot: 120 s */
        usleep(100000);
        if (read_reload_status(&now, msg, sizeof(msg)) == 0 && now != before) {
            if (strcmp(msg, "ok") == 0) {
                if (!cli->silent)
                    fprintf(stderr, "reloaded\n");
                return 0;
            }
            fprintf(stderr, "reload failed: %s\n", msg);
            return 1;
        }
        if (kill(pid, 0) < 0) {
            fprintf(stderr, "%s: the server (pid %d) is gone\n", progname, pid);
            return 1;
        }
    }
    fprintf(stderr, "%s: no answer from pid %d within 120 s\n", progname, pid);
    return 1;
}

static int cmd_stop(const fl_cli_t *cli)
{
    FILE *f = fopen(".pid", "r");
    int pid = 0;
    if (!f || fscanf(f, "%d", &pid) != 1 || pid <= 0) {
        fprintf(stderr, "%s: no .pid file here: start the server with `serve -p`\n", progname);
        if (f)
            fclose(f);
        return 1;
    }
    fclose(f);
    if (!cli->silent)
        fprintf(stderr, "stopping process with PID: %d\n", pid);
    if (kill(pid, SIGTERM) < 0) {
        fprintf(stderr, "%s: kill %d: %s\n", progname, pid, strerror(errno));
        return 1;
    }
    if (cli->force) {
        sleep(1);
        kill(pid, SIGTERM);
    }
    return 0;
}

/* Spec §1.1 step 2: DOTENV_PATH wins over --dotenv; variables already set are kept (godotenv's
 * Load). Lines: KEY=VALUE, optional `export `, '#' comments, '...' literal, "..." with \n. */
static int load_dotenv(const char *flag)
{
    const char *path = getenv("DOTENV_PATH");
    if (!path || !*path)
        path = flag;
    if (!path || !*path)
        return 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: dotenv %s: %s\n", progname, path, strerror(errno));
        return -1;
    }
    char line[8192];
    while (fgets(line, sizeof(line), f)) {
        char *k = line + strspn(line, " \t");
        if (strncmp(k, "export ", 7) == 0)
            k += 7 + strspn(k + 7, " \t");
        char *eq = strchr(k, '=');
        if (*k == '#' || !eq)
            continue;
        char *ke = eq;
        while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
            ke--;
        *ke = 0;
        char *v = eq + 1 + strspn(eq + 1, " \t");
        v[strcspn(v, "\r\n")] = 0;
        char q = *v;
        if ((q == '"' || q == '\'') && strrchr(v + 1, q)) {
            *strrchr(v + 1, q) = 0;
            v++;
            for (char *r = v, *w = v; q == '"'; r++) { /* unescape \n and \" */
                if (r[0] == '\\' && (r[1] == 'n' || r[1] == '"' || r[1] == '\\'))
                    *w++ = *++r == 'n' ? '\n' : *r;
                else
                    *w++ = *r;
                if (!*r)
                    break;
            }
        } else {
            char *hash = strstr(v, " #"); /* an inline comment after an unquoted value */
            if (hash)
                *hash = 0;
            for (size_t n = strlen(v); n && (v[n - 1] == ' ' || v[n - 1] == '\t'); n--)
                v[n - 1] = 0;
        }
        if (*k)
            setenv(k, v, 0);
    }
    fclose(f);
    return 0;
}

/* reset / workers / jobs: RPC clients of the running server (ctl.c). */
static int cmd_client(const fl_cli_t *cli, const char *abs)
{
    fl_ctl_opts_t o = {.config = abs[0] ? abs : NULL,
                       .overrides = cli->overrides,
                       .noverrides = cli->noverrides,
                       .silent = cli->silent,
                       .interactive = cli->interactive,
                       .args = cli->args,
                       .nargs = cli->nargs,
                       .jobs_mode = cli->jobs_mode,
                       .jobs_arg = cli->jobs_arg};
    if (!strcmp(cli->command, "reset"))
        return fl_ctl_reset(&o);
    if (!strcmp(cli->command, "workers"))
        return fl_ctl_workers(&o);
    return fl_ctl_jobs(&o);
}

int main(int argc, char **argv)
{
    fl_proctitle_init(argc, argv);
    const char *base = strrchr(argv[0], '/');
    progname = base ? base + 1 : argv[0];
    fl_cli_t cli = {0};
    parse_cli(&cli, argc, argv);
    int rc = 0;
    if (cli.version) {
        if (strcmp(progname, "rr") == 0)
            printf("rr version %s (build time: %s, forkline %s), OS: linux, arch: amd64\n",
                   FL_RR_VERSION, __DATE__, FL_VERSION);
        else
            printf("forkline %s (rr-compatible %s)\n", FL_VERSION, FL_RR_VERSION);
        goto out;
    }
    if (cli.help || (!cli.command && !cli.test)) {
        usage(cli.help ? stdout : stderr);
        rc = cli.help ? 0 : 1;
        goto out;
    }
    static const char *const commands[] = {"serve", "stop", "reload", "reset", "workers", "jobs"};
    bool known = !cli.command, client = false;
    for (size_t i = 0; cli.command && i < FL_ARRAY_SIZE(commands); i++)
        if (strcmp(cli.command, commands[i]) == 0)
            known = true, client = i >= 3;
    if (!known) {
        fprintf(stderr, "%s: unknown command: %s\n", progname, cli.command);
        usage(stderr);
        rc = 1;
        goto out;
    }
    if (cli.nargs && !client) {
        fprintf(stderr, "%s: unexpected argument: %s\n", progname, cli.args[0]);
        rc = 1;
        goto out;
    }
    char abs[PATH_MAX], orig_cwd[PATH_MAX];
    if (!getcwd(orig_cwd, sizeof(orig_cwd)))
        orig_cwd[0] = 0;
    if (enter_workdir(&cli, abs, sizeof(abs)) < 0 || load_dotenv(cli.dotenv) < 0) {
        rc = 1;
        goto out;
    }
    if (cli.command && !strcmp(cli.command, "reload")) {
        rc = cmd_reload(&cli, abs);
        goto out;
    }
    if (cli.command && !strcmp(cli.command, "stop")) {
        rc = cmd_stop(&cli);
        goto out;
    }
    if (client) {
        rc = cmd_client(&cli, abs);
        goto out;
    }
    fl_conf_t conf = {0};
    fl_conf_err_t err;
    bool upgrading = getenv(FL_UPGRADE_ENV) && cli.command && !strcmp(cli.command, "serve");
    bool loaded =
        fl_conf_load(&conf, abs[0] ? abs : NULL, cli.overrides, cli.noverrides, &err) == 0;
    if (!loaded) {
        fprintf(stderr, "%s\n", err.msg);
        rc = 1;
        /* a re-exec'ed master still holds running reactors: it must keep them serving */
        if (!upgrading)
            goto out;
    }
    if (cli.test) {
        fprintf(stderr, "%s: configuration %s is valid\n", progname, abs[0] ? abs : "(overrides)");
        fl_conf_free(&conf);
        goto out;
    }
    if (loaded && fl_conf_apply_logs(&conf) < 0) {
        fl_conf_free(&conf);
        rc = 1;
        goto out;
    }
    fl_master_flags_t mf = {.silent = cli.silent,
                            .pidfile = cli.pidfile,
                            .config_path = abs[0] ? abs : NULL,
                            .overrides = cli.overrides,
                            .noverrides = cli.noverrides,
                            .argv = argv,
                            .orig_cwd = orig_cwd[0] ? orig_cwd : NULL};
    rc = fl_master_run(loaded ? &conf : NULL, &mf);
out:
    free(cli.overrides);
    free(cli.args);
    return rc;
}
