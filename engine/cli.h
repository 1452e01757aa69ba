/* The subcommands of the connectd binary besides `run`. */
#ifndef CONNECTD_CLI_H
#define CONNECTD_CLI_H

/* `connectd validate -c FILE`: 0 when the engine config and every pipeline
 * are valid; otherwise prints "file: json.path: reason" lines and returns 1. */
int cli_validate(const char *config_path);
/* `connectd plugins [-c FILE]`: every discovered plugin and its options, as
 * Markdown (the plugin READMEs carry the same tables). */
int cli_plugins(const char *config_path);
/* `connectd broker ...`: see broker.c. */
int cli_broker(int argc, char **argv);

#endif
