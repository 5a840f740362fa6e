/* version.h: the version lanternd, lantern-oci and the image say they are
 * (`lanternd --version`). */
#ifndef LANTERN_VERSION_H
#define LANTERN_VERSION_H

#define LANTERN_VERSION "0.1.0"

#endif
