import sys, hashlib, os
n=int(sys.argv[1]); d=sys.argv[2]; dest=sys.argv[3]
os.makedirs(d+"/bundles/big", exist_ok=True)
open(d+"/cinch.toml","w").write("")
open(d+"/nodes.toml","w").write(f'[nodes.one]\ntransport = "local"\nbundles = ["big"]\nlock_dir = "{d}/locks"\n')
out=[f'[directories."{dest}"]\nmode = "0755"\n']
for i in range(n):
    sub=f"{dest}/d{i//1000:03d}"
    if i%1000==0: out.append(f'[directories."{sub}"]\nmode = "0755"\n')
    c=f"file {i}\n"+hashlib.sha256(str(i).encode()).hexdigest()*4+"\n"
    out.append(f'[files."{sub}/f{i:06d}.conf"]\ncontent = "{c.encode("unicode_escape").decode()}"\nmode = "0644"\n')
open(d+"/bundles/big/items.toml","w").write("\n".join(out))
