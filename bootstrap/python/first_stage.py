import sys,zlib,binascii,marshal
L=0
if L:import posix as os;os.dup2(0,100)
else:
	import os
	R,W=os.pipe()
	r,w=os.pipe()
	if os.fork():
		os.dup2(0,100)
		os.dup2(R,0)
		os.dup2(r,101)
		for f in(R,r,W,w):os.close(f)
		os.environ['ARGV0']=e=sys.executable
		os.execl(e,e+'(econtext:'+N+')')
	os.write(W,b"import os,marshal\n_P=[]\nwhile 1:\n\t_c=os.read(101,65536)\n\tif not _c:break\n\t_P.append(_c)\nos.close(101)\n_P=b''.join(_P)\n_i=_P.index(b'\\n');_C=[int(_x) for _x in _P[:_i].split()];_m=_C.pop(0);_n=_i+1+_C[0];_s=_P[_i+1:_n]\nfor _k in range(1,len(_C)):_C[_k],_n=_P[_n:_n+_C[_k]],_n+_C[_k]\ndel _C[0],_P\nwhile _C:exec(marshal.loads(_C.pop(0)))\n")
	os.close(W)
I=getattr(sys,'implementation',0)
M=sys.modules.get('_frozen_importlib_external')
os.write(1,I and I.cache_tag and M and b'ECT '+(I.cache_tag+' ').encode()+binascii.hexlify(M.MAGIC_NUMBER)+b'\nEC0\n' or b'EC0\n')
def g(n,s=b''):
	while len(s)<n:
		c=os.read(0,n-len(s))
		if not c:os._exit(1)
		s+=c
	return s
n=b''
while n[-1:]!=b'\n':n+=g(1)
z=g(int(n));C=b''
while z:d=zlib.decompressobj();C+=d.decompress(z);z=d.unused_data
B=[];m=C[:1]==b'\0';i=0
while C[:1]==b'\0':k=C.index(b'\n');i=k+1+int(C[1:k]);B.append(C[k+1:i]);C=C[i:]
if m:i=C.rfind(b'\nmain(')+1
k=C.count(b'\n',0,i)
if L:
	os.write(1,b'EC1\n')
	_m,_s,_C,_t=m,C,B,b'\n'*k+C[i:]
	del I,M,g,n,z,C,B,m,i,k,L,N
	while _C:exec(marshal.loads(_C.pop(0)))
	exec(_t if _m else compile(_t,'<stdin>','exec'))
while i<len(C):
	j=min(C.find(b'\nclass ',i+1024)%len(C),C.find(b'\ndef ',i+1024)%len(C))+1
	B.append(marshal.dumps(compile(b'\n'*k+C[i:j],'<stdin>','exec')));k+=C.count(b'\n',i,j);i=j
f=os.fdopen(w,'wb');f.write(('%d %d%s\n'%(m,len(C),''.join(' %d'%len(b) for b in B))).encode()+C+b''.join(B));f.close()
os.write(1,b'EC1\n')
os._exit(0)
